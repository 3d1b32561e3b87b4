"""Corpus embeddings as shards on disk: written by every process for its own rows, resumable
after a kill, read back shard by shard (pyserini's --shard-id/--shard-num, t5x's chunked
inference outputs with completion markers).

    OUT/manifest.json          what was encoded: model and corpus fingerprints, count, dim,
                               dtype, shard size (written first: a rerun with other settings is
                               refused instead of mixing encodings)
    OUT/shard-00003.npy        rows [3*S, 4*S) of the corpus: float32, float16 or int8 vectors
    OUT/shard-00003.scales.npy the int8 rows' float32 scales (int8 only)
    OUT/shard-00003.done       completion marker: rows, size and sha256 of each file, seconds

Shard s belongs to process s % P, which encodes it on its own devices (`MeshEncoder`) and
writes it under temporary names, then the marker. A shard with a valid marker is never encoded
again, so after `kill -9` the same command continues at the first incomplete shard; because
encoding is deterministic (mesh_encoding.py), the shards it writes are byte-identical to those
of an uninterrupted run.

OUT may be a URI (gs://bucket/emb: irjax/paths.py): each file is uploaded under a temporary
name and renamed, which is not atomic on an object store, so what makes a remote shard safe to
read is its marker, written after its files and checked on every read (sizes, and the sha256 of
the very bytes that are then decoded: a remote shard is downloaded once, not once to verify and
again to load). The manifest is likewise written before any shard and checked on open.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from irjax.data.collection import Document
from irjax.errors import UserError
from irjax.files import (atomic_write_bytes, atomic_write_text, quarantine,
                         remove_orphan_temporaries, sha256_file)
from irjax.index.quantization import quantize_int8
from irjax.paths import AnyPath, as_path, file_size

log = logging.getLogger(__name__)

FORMAT = 1
DTYPES = ("float32", "float16", "int8")
MANIFEST = "manifest.json"


class EmbeddingShardsError(ValueError, UserError):
    """An embedding directory that is incomplete, corrupted, or holds another encoding."""


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """Which rows each shard holds: shard s is rows [s*shard_size, min((s+1)*shard_size, count))."""

    count: int
    shard_size: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.shard_size < 1:
            raise ValueError(f"need count >= 1 and shard_size >= 1, got {self.count}, "
                             f"{self.shard_size}")

    @property
    def num_shards(self) -> int:
        return -(-self.count // self.shard_size)

    def rows(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.count))

    def owned_by(self, process_index: int, process_count: int) -> list[int]:
        return [s for s in range(self.num_shards) if s % process_count == process_index]


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def encode_vectors(vectors: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """The files of one shard: {"": vectors in `dtype`} (+ {"scales": ...} for int8)."""
    if dtype == "float32":
        return {"": np.ascontiguousarray(vectors, np.float32)}
    if dtype == "float16":
        return {"": vectors.astype(np.float16)}
    if dtype == "int8":
        q, scales = quantize_int8(vectors)
        return {"": q, "scales": scales}
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class EmbeddingShards:
    """A directory of embedding shards (module docstring): written with `write_shard`, read with
    `load`/`matrix`. `expected` (model, corpus, count, dim, dtype, shard_size) is checked
    against an existing manifest."""

    def __init__(self, directory: str | AnyPath, manifest: dict[str, Any]):
        self.directory, self.manifest = as_path(directory), manifest
        self.layout = ShardLayout(manifest["count"], manifest["shard_size"])
        self.dtype, self.dim = manifest["dtype"], manifest["dim"]

    @classmethod
    def create(cls, directory: str | AnyPath, *, model: str, corpus: str, count: int, dim: int,
               dtype: str, shard_size: int, kind: str = "pooled",
               write: bool = True) -> "EmbeddingShards":
        """Opens `directory` for these settings: a new one gets the manifest (when `write`, i.e.
        on process 0); an existing one must hold the same settings."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        manifest = {"format": FORMAT, "kind": kind, "model": model, "corpus": corpus,
                    "count": count, "dim": dim, "dtype": dtype, "shard_size": shard_size}
        path = as_path(directory) / MANIFEST
        if path.exists():
            found = cls.open(directory).manifest
            different = {k: (found.get(k), v) for k, v in manifest.items() if found.get(k) != v}
            if different:
                raise EmbeddingShardsError(
                    f"{directory} holds another encoding ({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in different.items())}); use a new directory")
        elif write:
            atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
        return cls(directory, manifest)

    @classmethod
    def open(cls, directory: str | AnyPath) -> "EmbeddingShards":
        path = as_path(directory) / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise EmbeddingShardsError(f"{directory} has no {MANIFEST}: not an embedding "
                                       "directory, or its encoding never started") from None
        except json.JSONDecodeError as e:
            raise EmbeddingShardsError(f"{path} is not valid JSON ({e})") from None
        if manifest.get("format") != FORMAT:
            raise EmbeddingShardsError(f"{path}: format {manifest.get('format')!r}, expected "
                                       f"{FORMAT}; encode again into a new directory")
        return cls(directory, manifest)

    # -- writing ---------------------------------------------------------------------------------
    def _marker(self, shard: int) -> AnyPath:
        return self.directory / f"{shard_name(shard)}.done"

    def _files(self, shard: int) -> dict[str, AnyPath]:
        names = {"": f"{shard_name(shard)}.npy"}
        if self.dtype == "int8":
            names["scales"] = f"{shard_name(shard)}.scales.npy"
        return {key: self.directory / name for key, name in names.items()}

    def write_shard(self, shard: int, vectors: np.ndarray, seconds: float) -> None:
        """Writes shard `shard`'s files (temporary names, then renamed), then its marker."""
        rows = self.layout.rows(shard)
        if vectors.shape != (len(rows), self.dim):
            raise ValueError(f"shard {shard} needs [{len(rows)}, {self.dim}] vectors, got "
                             f"{vectors.shape}")
        record = {}
        for key, array in encode_vectors(vectors, self.dtype).items():
            path, data = self._files(shard)[key], _npy_bytes(array)
            atomic_write_bytes(path, data)
            record[path.name] = {"size": file_size(path), "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_text(self._marker(shard), json.dumps({
            "rows": [rows.start, rows.stop], "files": record, "seconds": round(seconds, 3),
            "docs_per_s": round(len(rows) / max(seconds, 1e-9), 2)}, indent=2) + "\n")

    def is_complete(self, shard: int, verify: bool = False) -> bool:
        """Whether the shard's marker exists and its files have the recorded sizes (and sha256
        when `verify`)."""
        try:
            record = json.loads(self._marker(shard).read_text())
        except (OSError, json.JSONDecodeError):
            return False
        files = record.get("files", {})
        for path in self._files(shard).values():
            expected = files.get(path.name)
            if expected is None or not path.is_file() or file_size(path) != expected["size"]:
                return False
            if verify and sha256_file(path) != expected["sha256"]:
                return False
        return True

    def has_marker(self, shard: int) -> bool:
        return self._marker(shard).exists()

    def quarantine(self, shard: int) -> list[str]:
        """Moves a damaged shard's files and marker aside (kept for inspection)."""
        paths = [*self._files(shard).values(), self._marker(shard)]
        return [quarantine(p).name for p in paths if p.exists()]

    def remove_orphans(self, shard: int) -> None:
        """Temporary files a killed writer of this shard left (none of a live one)."""
        for path in [*self._files(shard).values(), self._marker(shard)]:
            remove_orphan_temporaries(self.directory, name=path.name)

    def missing(self) -> list[int]:
        return [s for s in range(self.layout.num_shards) if not self.is_complete(s)]

    # -- reading ---------------------------------------------------------------------------------
    def _read_remote(self, shard: int, verify: bool) -> dict[str, bytes] | None:
        """The bytes of a remote shard's files, checked against its marker as `is_complete`
        checks them; None where that check fails."""
        try:
            recorded = json.loads(self._marker(shard).read_text()).get("files", {})
        except (OSError, json.JSONDecodeError):
            return None
        out = {}
        for key, path in self._files(shard).items():
            expected = recorded.get(path.name)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            if expected is None or len(data) != expected["size"] or (
                    verify and hashlib.sha256(data).hexdigest() != expected["sha256"]):
                return None
            out[key] = data
        return out

    def load(self, shard: int, verify: bool = True) -> np.ndarray:
        """float32 [rows, dim] of one complete shard (int8 and float16 decoded)."""
        arrays: dict[str, np.ndarray] | None = None
        if isinstance(self.directory, Path):
            if self.is_complete(shard, verify=verify):
                arrays = {key: np.load(path, allow_pickle=False)
                          for key, path in self._files(shard).items()}
        elif (data := self._read_remote(shard, verify)) is not None:
            arrays = {key: np.load(io.BytesIO(raw), allow_pickle=False)
                      for key, raw in data.items()}
        if arrays is None:
            raise EmbeddingShardsError(f"{self.directory}: shard {shard} is missing, incomplete or "
                                       "fails its checksum; run the encoding again (it resumes)")
        vectors = arrays[""]
        if self.dtype == "int8":
            return vectors.astype(np.float32) * arrays["scales"][:, None]
        return vectors.astype(np.float32, copy=False)

    def matrix(self, limit: int | None = None, verify: bool = True) -> np.ndarray:
        """float32 [rows, dim] of the first `limit` rows (default all), shard by shard."""
        limit = self.layout.count if limit is None else min(limit, self.layout.count)
        out = np.empty((limit, self.dim), np.float32)
        for shard in range(self.layout.num_shards):
            rows = self.layout.rows(shard)
            if rows.start >= limit:
                break
            take = min(rows.stop, limit) - rows.start
            out[rows.start:rows.start + take] = self.load(shard, verify)[:take]
        return out

    def bytes_per_document(self) -> float:
        per_row = {"float32": 4 * self.dim, "float16": 2 * self.dim, "int8": self.dim + 4}
        return float(per_row[self.dtype])


def encode_shards(shards: EmbeddingShards, documents: Callable[[range], Sequence[Document]],
                  encode: Callable[[list[str], Callable[[int], None]], np.ndarray],
                  owned: Sequence[int], progress: Callable[[int], None] | None = None
                  ) -> dict[str, float]:
    """Encodes every shard of `owned` that is not complete: `documents(rows)` reads its
    documents, `encode(texts, on_done)` returns float32 [n, dim]. Returns throughput figures."""
    done_docs, seconds, skipped = 0, 0.0, 0
    for shard in owned:
        if shards.is_complete(shard, verify=True):
            skipped += 1
            if progress is not None:
                progress(len(shards.layout.rows(shard)))
            continue
        if shards.has_marker(shard):
            moved = shards.quarantine(shard)
            log.warning("%s/%s fails its size or checksum check: moved aside (%s); encoding it "
                        "again", shards.directory, shard_name(shard), ", ".join(moved))
        shards.remove_orphans(shard)
        rows = shards.layout.rows(shard)
        start = time.perf_counter()
        texts = [d.contents for d in documents(rows)]
        vectors = encode(texts, progress or (lambda n: None))
        elapsed = time.perf_counter() - start
        shards.write_shard(shard, vectors, elapsed)
        done_docs, seconds = done_docs + len(rows), seconds + elapsed
        log.info("%s: rows %d-%d in %.1f s (%.1f docs/s)", shard_name(shard), rows.start,
                 rows.stop - 1, elapsed, len(rows) / max(elapsed, 1e-9))
    return {"encoded_docs": done_docs, "encode_s": seconds, "skipped_shards": skipped,
            "docs_per_s": done_docs / seconds if seconds else 0.0}


def iter_rows(shards: EmbeddingShards) -> Iterator[tuple[range, np.ndarray]]:
    """(rows, float32 vectors) of every shard in order."""
    for shard in range(shards.layout.num_shards):
        yield shards.layout.rows(shard), shards.load(shard)
