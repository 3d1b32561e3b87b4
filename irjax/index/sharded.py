"""One index per corpus shard, searched shard by shard and merged into the global top-k.

A pod cannot hold MS MARCO's vectors in one process, so each process builds indexes over the
shards it encoded (any kind: exact, ScaNN, faiss), searches them for every query, and the
per-shard top-k lists are merged: by descending score, ties by ascending corpus row. An exact
index orders ties the same way, so a sharded exact search returns exactly what one exact index
over the whole corpus returns. Each shard is saved with the ordinary index manifest in its own
folder; `shards.json` records where each shard's rows start.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from irjax.files import atomic_write_text
from irjax.index.base import Index, IndexIntegrityError, create_index, index_class, load_index

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


class ShardedIndex:
    """Indexes of several row ranges of one corpus; `search` returns global rows."""

    def __init__(self, kind: str, metric: str = "dot", **options: Any):
        index_class(kind)  # an unknown kind fails here, before any vector is read
        self.kind, self.metric, self.options = kind, metric, dict(options)
        self.shards: dict[int, tuple[int, Index]] = {}  # shard number -> (first row, index)

    def add(self, shard: int, first_row: int, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Builds the index of shard `shard`, whose row 0 is corpus row `first_row`."""
        index = create_index(self.kind, metric=self.metric, **self.options)
        self.shards[shard] = (first_row, index.build(vectors, ids))

    def __len__(self) -> int:
        return sum(len(index) for _, index in self.shards.values())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, global rows) [q, k] over this object's shards, merged (module docstring)."""
        if not self.shards:
            raise RuntimeError("no shard added or loaded")
        parts = []
        for first_row, index in self.shards.values():
            result = index.search(queries, k)
            parts.append((result.scores, result.indices + first_row))
        return merge_top_k(parts, k)

    def save(self, directory: str | os.PathLike, write_manifest: bool = True) -> None:
        """Saves each shard to DIRECTORY/shard-NNNNN/ and (when `write_manifest`) shards.json
        listing every shard of this object. With several processes, each saves its own shards
        and one writes the merged list (`write_shards_file`)."""
        directory = Path(directory)
        for shard, (_, index) in sorted(self.shards.items()):
            index.save(directory / f"shard-{shard:05d}")
        if write_manifest:
            write_shards_file(directory, self.kind, self.metric, self.options,
                              {s: (first, len(index)) for s, (first, index) in self.shards.items()})

    @classmethod
    def load(cls, directory: str | os.PathLike, shards: Sequence[int] | None = None
             ) -> "ShardedIndex":
        """Loads the listed shards (default: all in shards.json), each verified by its manifest."""
        directory = Path(directory)
        try:
            listing = json.loads((directory / SHARDS_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise IndexIntegrityError(f"{directory}/{SHARDS_FILE} is missing or unreadable ({e}); "
                                      "the sharded index was never completed: rebuild it") from e
        out = cls(listing["kind"], listing["metric"], **listing["options"])
        wanted = sorted(int(s) for s in listing["shards"]) if shards is None else list(shards)
        for shard in wanted:
            record = listing["shards"].get(str(shard))
            if record is None:
                raise IndexIntegrityError(f"{directory}/{SHARDS_FILE} lists no shard {shard}")
            index = load_index(directory / f"shard-{shard:05d}")
            if len(index) != record["count"]:
                raise IndexIntegrityError(f"{directory}/shard-{shard:05d} holds {len(index)} "
                                          f"vectors, {SHARDS_FILE} says {record['count']}")
            out.shards[shard] = (record["first_row"], index)
        return out


def write_shards_file(directory: Path, kind: str, metric: str, options: dict[str, Any],
                      shards: dict[int, tuple[int, int]]) -> None:
    """shards.json: kind, metric, options and {shard: {first_row, count}}; written last, so its
    presence means every listed shard was saved."""
    atomic_write_text(Path(directory) / SHARDS_FILE, json.dumps({
        "kind": kind, "metric": metric, "options": options,
        "shards": {str(s): {"first_row": first, "count": count}
                   for s, (first, count) in sorted(shards.items())}}, indent=2) + "\n")
