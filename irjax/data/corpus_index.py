"""Random access to a corpus.jsonl that never holds the corpus in memory.

One pass over the file records, per document, the byte offset and line number of its line and
its id (ids packed into one byte blob), checking every line exactly as the whole-file loader
does and finding duplicate ids through sorted 64-bit hashes rather than a dict of every id. The
result is cached (under $IRJAX_CACHE_DIR/corpus_index/) with the file's size, mtime and sha256,
so later opens cost a few array loads; a changed file is indexed again. A process then reads
only the rows it owns (`read(start, stop)`): one contiguous byte range, parsed line by line,
errors still naming file:line.

A corpus.jsonl on a remote filesystem (gs://, s3://: irjax/paths.py) is read the same way, by
ranged reads, and its index is cached locally like any other. Object stores may report no
modification time (etils gives 0 for s3 and fsspec's memory filesystem; GCS gives seconds), so
a remote file's stamp is its size, its modification time when known, and the sha256 of its first
and last MiB (`_EDGE` bytes): two small ranged reads instead of reading the whole corpus on every
open, as a full sha256 would. What that misses is a rewrite that keeps the size, both ends and
(where there is one) the modification second; delete the cache folder
($IRJAX_CACHE_DIR/corpus_index/) after rewriting a remote corpus in place that way.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from array import array
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from irjax.data.collection import (CollectionError, Document, duplicate_id_error,
                                   parse_document)
from irjax.files import atomic_directory, cache_root
from irjax.paths import AnyPath, absolute, file_size, modified_time

log = logging.getLogger(__name__)

FORMAT = 1
_BLOCK = 1 << 24
_ARRAYS = ("offsets", "ends", "lines", "id_offsets")
_EDGE = 1 << 20


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


def _file_stamp(path: AnyPath) -> dict[str, int | str]:
    """What tells a changed file from the one indexed (module docstring)."""
    if isinstance(path, Path):
        stat = path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    size = file_size(path)
    edges = hashlib.sha256()
    with path.open("rb") as f:
        edges.update(f.read(_EDGE))
        if size > _EDGE:
            f.seek(max(_EDGE, size - _EDGE))
            edges.update(f.read(_EDGE))
    return {"size": size, "mtime": int(modified_time(path) or 0),
            "edges_sha256": edges.hexdigest()}


def _lines(path: AnyPath, digest: "hashlib._Hash") -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, line bytes without the newline) of every line; the
    file's bytes go through `digest` as they are read."""
    number, offset, tail = 0, 0, b""
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            block = tail + block
            start = 0
            while (end := block.find(b"\n", start)) >= 0:
                number += 1
                yield number, offset + start, block[start:end]
                start = end + 1
            offset += start
            tail = block[start:]
    if tail:
        yield number + 1, offset, tail


class CorpusIndex:
    """Offsets, line numbers and ids of every document of one corpus.jsonl (module docstring)."""

    def __init__(self, path: AnyPath, arrays: dict[str, np.ndarray], id_blob: bytes, sha256: str,
                 counts: dict[str, int]):
        self.path = path
        self.offsets, self.ends = arrays["offsets"], arrays["ends"]
        self.lines, self.id_offsets = arrays["lines"], arrays["id_offsets"]
        self.id_blob, self.sha256 = id_blob, sha256
        self.counts = dict(counts)  # blank lines and empty documents, as the loader counts them
        self._hash_order: np.ndarray | None = None
        self._hashes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None
             ) -> "CorpusIndex":
        """The index of `path`, from the cache when the file is unchanged, else built and cached."""
        path = absolute(path)
        if not path.is_file():
            raise CollectionError(f"{path}: file not found; a BEIR collection folder needs "
                                  "corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
        stamp = _file_stamp(path)
        key = hashlib.sha256(str(path).encode()).hexdigest()[:24]
        folder = Path(cache_dir or cache_root() / "corpus_index") / key
        cached = cls._load(folder, path, stamp)
        if cached is not None:
            return cached
        log.info("indexing %s (one pass; cached in %s)", path, folder)
        index = cls.build(path)
        if _file_stamp(path) == stamp:  # not rewritten while we read it
            index._save(folder, stamp)
        return index

    @classmethod
    def build(cls, path: AnyPath) -> "CorpusIndex":
        offsets, ends, lines, id_offsets = array("q"), array("q"), array("q"), array("q", [0])
        hashes = array("Q")
        blob = bytearray()
        digest = hashlib.sha256()
        counts = dict.fromkeys(("blank_lines_corpus", "documents_with_empty_text_but_title",
                                "empty_documents"), 0)
        for number, offset, raw in _lines(path, digest):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raise CollectionError(f"{path}:1: file starts with a UTF-8 byte-order mark (BOM); "
                                      "re-save it as UTF-8 without BOM")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CollectionError(f"{path}:{number}: invalid UTF-8 byte 0x{raw[e.start]:02x} at "
                                      f"byte offset {e.start} of the line; re-encode the file as "
                                      "UTF-8") from None
            if not text.strip():
                counts["blank_lines_corpus"] += 1
                continue
            document = parse_document(path, number, text)
            if not document.text.strip():
                counts["documents_with_empty_text_but_title" if document.title.strip()
                       else "empty_documents"] += 1
            doc_id = document.doc_id
            offsets.append(offset)
            ends.append(offset + len(raw))
            lines.append(number)
            blob += doc_id.encode("utf-8")
            id_offsets.append(len(blob))
            hashes.append(_id_hash(doc_id))
        if not offsets:
            raise CollectionError(f"{path}: contains no documents; expected one JSON object per line")
        arrays = {"offsets": np.frombuffer(offsets, np.int64), "ends": np.frombuffer(ends, np.int64),
                  "lines": np.frombuffer(lines, np.int64),
                  "id_offsets": np.frombuffer(id_offsets, np.int64)}
        index = cls(path, arrays, bytes(blob), digest.hexdigest(), counts)
        index._hashes = np.frombuffer(hashes, np.uint64)
        index._check_duplicates()
        return index

    def _check_duplicates(self) -> None:
        hashes = self._id_hashes()
        order = self._order()
        same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
        for k in same:  # equal hashes: compare the ids themselves
            a, b = sorted((int(order[k]), int(order[k + 1])))
            if self.doc_id(a) == self.doc_id(b):
                raise duplicate_id_error(self.path, int(self.lines[b]), self.doc_id(b),
                                         int(self.lines[a]))

    @classmethod
    def _load(cls, folder: Path, path: AnyPath, stamp: dict[str, int | str]
              ) -> "CorpusIndex | None":
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("format") != FORMAT or meta.get("path") != str(path) or \
                    meta.get("stamp") != stamp:
                return None
            arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False)
                      for name in _ARRAYS}
            blob = (folder / "ids.bin").read_bytes()
        except (OSError, ValueError, KeyError):
            return None  # absent or unreadable: index the file again
        if len(blob) != int(arrays["id_offsets"][-1]) or len(arrays["offsets"]) != meta["count"]:
            return None
        return cls(path, arrays, blob, meta["sha256"], meta["counts"])

    def _save(self, folder: Path, stamp: dict[str, int | str]) -> None:
        try:
            with atomic_directory(folder) as tmp:
                for name in _ARRAYS:
                    np.save(tmp / f"{name}.npy", getattr(self, name), allow_pickle=False)
                (tmp / "ids.bin").write_bytes(self.id_blob)
                (tmp / "meta.json").write_text(json.dumps({
                    "format": FORMAT, "path": str(self.path), "stamp": stamp, "count": len(self),
                    "sha256": self.sha256, "counts": self.counts}))
        except OSError as e:  # a read-only cache only costs the next open a rebuild
            log.warning("could not cache the corpus index in %s (%s)", folder, e)

    # -- ids -------------------------------------------------------------------------------------
    def doc_id(self, row: int) -> str:
        start, stop = int(self.id_offsets[row]), int(self.id_offsets[row + 1])
        return self.id_blob[start:stop].decode("utf-8")

    def doc_ids(self, rows: Sequence[int] | range | None = None) -> list[str]:
        """Ids of `rows` (default: all, in corpus order)."""
        rows = range(len(self)) if rows is None else rows
        return [self.doc_id(int(r)) for r in rows]

    def _id_hashes(self) -> np.ndarray:
        if self._hashes is None:
            self._hashes = np.fromiter((_id_hash(self.doc_id(i)) for i in range(len(self))),
                                       np.uint64, count=len(self))
        return self._hashes

    def _order(self) -> np.ndarray:
        if self._hash_order is None:
            self._hash_order = np.argsort(self._id_hashes(), kind="stable")
        return self._hash_order

    def row_of(self, doc_id: str) -> int | None:
        """The row of `doc_id`, or None if the corpus has no such document."""
        hashes, order = self._id_hashes(), self._order()
        h = np.uint64(_id_hash(doc_id))
        position = int(np.searchsorted(hashes[order], h))
        while position < len(order) and hashes[order[position]] == h:
            row = int(order[position])
            if self.doc_id(row) == doc_id:
                return row
            position += 1
        return None

    # -- documents -------------------------------------------------------------------------------
    def read(self, start: int, stop: int) -> list[Document]:
        """Documents of rows [start, stop), read as one byte range of the file."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows [{start}, {stop}) outside the corpus of {len(self)} documents")
        if start == stop:
            return []
        with self.path.open("rb") as f:
            f.seek(int(self.offsets[start]))
            data = f.read(int(self.ends[stop - 1]) - int(self.offsets[start]))
        base = int(self.offsets[start])
        out = []
        for row in range(start, stop):
            raw = data[int(self.offsets[row]) - base:int(self.ends[row]) - base]
            out.append(parse_document(self.path, int(self.lines[row]), raw.decode("utf-8")))
        return out

    def windows(self, rows: range, size: int) -> Iterator[tuple[int, list[Document]]]:
        """(first row, documents) of consecutive windows of at most `size` rows of `rows`."""
        for start in range(rows.start, rows.stop, size):
            yield start, self.read(start, min(start + size, rows.stop))


class StreamedDocuments(Sequence[Document]):
    """A corpus (or its first `limit` documents) as a read-only sequence of Documents read from
    disk on access; iterating reads it window by window, so only one window is in memory."""

    def __init__(self, index: CorpusIndex, window: int = 4096, limit: int | None = None):
        self.index, self.window = index, window
        self.count = len(index) if limit is None else min(limit, len(index))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, item: int | slice) -> Document | list[Document]:  # type: ignore[override]
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            documents = self.index.read(start, max(start, stop)) if step == 1 else [
                self[i] for i in range(start, stop, step)]
            return documents
        row = item + len(self) if item < 0 else item
        return self.index.read(row, row + 1)[0]

    def __iter__(self) -> Iterator[Document]:
        for _, documents in self.index.windows(range(self.count), self.window):
            yield from documents


class StreamedIds(Sequence[str]):
    """Document ids in corpus order (of the first `limit`), from the index's packed blob; `in` is
    a hash lookup."""

    def __init__(self, index: CorpusIndex, limit: int | None = None):
        self.index = index
        self.count = len(index) if limit is None else min(limit, len(index))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, item: int | slice) -> str | list[str]:  # type: ignore[override]
        if isinstance(item, slice):
            return self.index.doc_ids(range(*item.indices(len(self))))
        return self.index.doc_id(item + len(self) if item < 0 else item)

    def __contains__(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str):
            return False
        row = self.index.row_of(doc_id)
        return row is not None and row < self.count

    def __iter__(self) -> Iterator[str]:
        for row in range(len(self)):
            yield self.index.doc_id(row)
