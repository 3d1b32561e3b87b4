"""Indexes over parts of a corpus, searched part by part and merged into the global top-k.

A pod cannot hold MS MARCO's vectors in one process, so each process builds an index (any kind:
exact, ScaNN, faiss) over the corpus rows it encoded, searches it for every query, and the
per-part top-k lists are merged: by descending score, ties by ascending corpus row. An exact
index orders ties the same way, so a sharded exact search returns exactly what one exact index
over the whole corpus returns. A part may cover any set of rows (a process owns every P-th
embedding shard); each part is saved with the ordinary index manifest in its own folder, and
`shards.json` records which corpus rows each part holds, as [start, stop) ranges. The directory
may be a URI (gs://...): parts are saved and loaded as any index is (index/base.py), and
shards.json, written after every part, is what tells a reader the whole index is there.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from irjax.files import atomic_write_text
from irjax.index.base import Index, IndexIntegrityError, create_index, index_class, load_index
from irjax.paths import AnyPath, as_path

SHARDS_FILE = "shards.json"


def merge_top_k(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The k best of several (scores [q, k_i], global rows [q, k_i]) lists per query: scores
    descending, ties by ascending row; rows -1 (score -inf) pad queries with fewer than k."""
    if not parts:
        raise ValueError("nothing to merge")
    scores = np.concatenate([np.asarray(s, np.float32) for s, _ in parts], axis=1)
    rows = np.concatenate([np.asarray(r, np.int64) for _, r in parts], axis=1)
    empty = rows < 0
    scores = np.where(empty, -np.inf, scores)
    sort_rows = np.where(empty, np.iinfo(np.int64).max, rows)
    order = np.lexsort((sort_rows, -scores), axis=-1)[:, :k]
    top_scores = np.take_along_axis(scores, order, 1)
    top_rows = np.take_along_axis(rows, order, 1)
    if top_scores.shape[1] < k:
        pad = k - top_scores.shape[1]
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_rows = np.pad(top_rows, ((0, 0), (0, pad)), constant_values=-1)
    return top_scores, np.where(np.isneginf(top_scores), -1, top_rows)


def _ranges(rows: np.ndarray) -> list[list[int]]:
    """[start, stop) runs of consecutive values of an increasing row array."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(rows)]])
    return [[int(rows[a]), int(rows[b - 1]) + 1] for a, b in zip(starts, stops)]


def _rows(ranges: Sequence[Sequence[int]]) -> np.ndarray:
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges] or
                          [np.zeros(0, np.int64)])


class ShardedIndex:
    """Indexes of several sets of corpus rows; `search` returns global rows."""

    def __init__(self, kind: str, metric: str = "dot", **options: Any):
        index_class(kind)  # an unknown kind fails here, before any vector is read
        self.kind, self.metric, self.options = kind, metric, dict(options)
        self.parts: dict[int, tuple[np.ndarray, Index]] = {}  # part -> (global rows, index)

    def add(self, part: int, rows: np.ndarray | range, vectors: np.ndarray,
            ids: Sequence[str]) -> None:
        """Builds part `part`: vector i is corpus row rows[i] (rows increasing)."""
        rows = np.asarray(rows, np.int64)
        if len(rows) != len(vectors) or np.any(np.diff(rows) <= 0):
            raise ValueError(f"part {part}: need one increasing corpus row per vector, got "
                             f"{len(rows)} rows for {len(vectors)} vectors")
        index = create_index(self.kind, metric=self.metric, **self.options)
        self.parts[part] = (rows, index.build(vectors, ids))

    def __len__(self) -> int:
        return sum(len(index) for _, index in self.parts.values())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, global rows) [q, k] over this object's parts, merged (module docstring)."""
        if not self.parts:
            raise RuntimeError("no part added or loaded")
        out = []
        for rows, index in self.parts.values():
            result = index.search(queries, k)
            out.append((result.scores, rows[result.indices]))
        return merge_top_k(out, k)

    def save(self, directory: str | os.PathLike, write_manifest: bool = True) -> None:
        """Saves each part to DIRECTORY/part-NNNNN/ and (when `write_manifest`) shards.json
        listing them. With several processes, each saves its own parts and one writes the
        merged list (`write_shards_file`)."""
        directory = as_path(directory)
        for part, (_, index) in sorted(self.parts.items()):
            index.save(directory / f"part-{part:05d}")
        if write_manifest:
            write_shards_file(directory, self.kind, self.metric, self.options,
                              {p: rows for p, (rows, _) in self.parts.items()})

    @classmethod
    def load(cls, directory: str | os.PathLike, parts: Sequence[int] | None = None
             ) -> "ShardedIndex":
        """Loads the listed parts (default: all in shards.json), each verified by its manifest."""
        directory = as_path(directory)
        try:
            listing = json.loads((directory / SHARDS_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise IndexIntegrityError(f"{directory}/{SHARDS_FILE} is missing or unreadable ({e}); "
                                      "the sharded index was never completed: rebuild it") from e
        out = cls(listing["kind"], listing["metric"], **listing["options"])
        wanted = sorted(int(p) for p in listing["parts"]) if parts is None else list(parts)
        for part in wanted:
            record = listing["parts"].get(str(part))
            if record is None:
                raise IndexIntegrityError(f"{directory}/{SHARDS_FILE} lists no part {part}")
            rows = _rows(record["rows"])
            index = load_index(directory / f"part-{part:05d}")
            if len(index) != len(rows):
                raise IndexIntegrityError(f"{directory}/part-{part:05d} holds {len(index)} "
                                          f"vectors, {SHARDS_FILE} lists {len(rows)} rows")
            out.parts[part] = (rows, index)
        return out


def write_shards_file(directory: str | AnyPath, kind: str, metric: str, options: dict[str, Any],
                      parts: dict[int, np.ndarray]) -> None:
    """shards.json: kind, metric, options and each part's corpus rows as [start, stop) ranges;
    written last, so its presence means every listed part was saved."""
    atomic_write_text(as_path(directory) / SHARDS_FILE, json.dumps({
        "kind": kind, "metric": metric, "options": options,
        "parts": {str(p): {"rows": _ranges(np.asarray(rows, np.int64)), "count": len(rows)}
                  for p, rows in sorted(parts.items())}}, indent=2) + "\n")
