"""ScaNN with memory bounded by a shard: asymmetric hashing in RAM, exact rescoring from disk.

A plain ScaNN build over n vectors holds about 2.4x the float32 matrix at its peak and keeps a
float32 copy (1.1x) for exact reordering (measured on 594k NFCorpus token vectors). That is the
part of a token index that grows with the corpus. This index instead

- builds one ScaNN searcher (tree + anisotropic hashing, *no* reordering) per `shard_size`
  consecutive rows, so the build's transient memory is that of one shard, and what stays in RAM
  is the hash codes and trees (~0.08x the float32 matrix);
- keeps the vectors for exact rescoring in a file on disk (float32, or int8 + a per-row scale),
  read through a memory map: pages come from the page cache and are not the process's own memory;
- searches every shard for its best `reorder_num_neighbors` by hashed score, rescores those
  exactly from the file (hashed scores of different shards' codebooks are not comparable), and
  merges the shards' exact top k.

The rescoring is what ScaNN's own `reorder` does, so results match a plain ScaNN index with the
same reorder depth up to the per-shard trees (tests/index/test_sharded_scann.py checks recall).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from irjax.files import atomic_write_text, remove_orphan_temporaries, temporary_prefix
from irjax.index.base import Index, IndexIntegrityError, register_index, validate_ids
from irjax.index.quantization import quantize_int8
from irjax.index.scann_index import load_scann_searcher, plan_scann, scann_builder

STORAGES = ("float32", "int8")
_SHARDS = "shards.json"
_VECTORS = "vectors.bin"
_SCALES = "scales.bin"


@register_index
class ShardedScannIndex(Index):
    """See the module docstring. Only the dot-product metric (what token retrieval uses)."""

    kind = "scann_sharded"
    required_files = (_SHARDS, _VECTORS)

    def __init__(self, metric: str = "dot", shard_size: int = 131_072,
                 reorder_num_neighbors: int = 4096, search_fraction: float = 0.3,
                 storage: str = "float32", dimensions_per_block: int = 2,
                 anisotropic_threshold: float = 0.2) -> None:
        super().__init__(metric)
        if metric != "dot":
            raise ValueError("scann_sharded supports metric='dot' only")
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        if shard_size < 2 or reorder_num_neighbors < 1 or not 0 < search_fraction <= 1:
            raise ValueError("need shard_size >= 2, reorder_num_neighbors >= 1 and "
                             "search_fraction in (0, 1]")
        self.shard_size = shard_size
        self.reorder_num_neighbors = reorder_num_neighbors
        self.search_fraction = search_fraction
        self.storage = storage
        self.dimensions_per_block = dimensions_per_block
        self.anisotropic_threshold = anisotropic_threshold
        self._searchers: list[Any] = []
        self._plans: list[dict[str, Any]] = []
        self._offsets: list[int] = [0]
        self._dir: Path | None = None
        self._vectors: np.ndarray | None = None
        self._scales: np.ndarray | None = None

    def options(self) -> dict[str, Any]:
        return {"shard_size": self.shard_size, "reorder_num_neighbors": self.reorder_num_neighbors,
                "search_fraction": self.search_fraction, "storage": self.storage,
                "dimensions_per_block": self.dimensions_per_block,
                "anisotropic_threshold": self.anisotropic_threshold}

    def build_params(self) -> dict[str, Any]:
        return {"shards": len(self._searchers), "plans": self._plans}

    # -- building: one shard in memory at a time ---------------------------------------------------
    def build(self, vectors: np.ndarray, ids: Sequence[str]) -> "ShardedScannIndex":
        """Like `Index.build`, but never converts or checks `vectors` (e.g. a memmap) as a whole:
        `_build` reads, validates and indexes it one shard at a time."""
        if not hasattr(vectors, "shape") or len(vectors.shape) != 2 or vectors.shape[0] == 0:
            raise ValueError("vectors must be a non-empty 2-D array [count, dim]")
        id_list = validate_ids(ids, int(vectors.shape[0]))
        self._build(vectors)
        self._set_ids(id_list, int(vectors.shape[1]))
        return self

    def _build(self, vectors: np.ndarray) -> None:
        count, dim = int(vectors.shape[0]), int(vectors.shape[1])
        remove_orphan_temporaries(tempfile.gettempdir(), name="irjax_sharded_scann")
        self._dir = Path(tempfile.mkdtemp(prefix=temporary_prefix("irjax_sharded_scann"),
                                          suffix=".tmp"))
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._searchers, self._plans, self._offsets = [], [], [0]
        with open(self._dir / _VECTORS, "wb") as out, \
                open(self._dir / _SCALES, "wb") as scales:
            for start in range(0, count, self.shard_size):
                shard = np.ascontiguousarray(vectors[start : start + self.shard_size],
                                             dtype=np.float32)
                if not np.isfinite(shard).all():
                    raise ValueError(f"vectors has NaN or infinite values in rows "
                                     f"{start}..{start + len(shard) - 1}; fix the encoder output")
                self._add_shard(shard)
                if self.storage == "int8":
                    q, s = quantize_int8(shard)
                    out.write(q.tobytes())
                    scales.write(s.tobytes())
                else:
                    out.write(shard.tobytes())
        self._open_vectors(count, dim)

    def _add_shard(self, shard: np.ndarray) -> None:
        plan = plan_scann(len(shard), search_fraction=self.search_fraction)
        builder = scann_builder(shard, plan, self.dimensions_per_block,
                                self.anisotropic_threshold)   # no reorder: rescored from disk
        self._searchers.append(builder.build())
        self._plans.append({"mode": plan.mode, "rows": len(shard), "num_leaves": plan.num_leaves,
                            "leaves_to_search": plan.leaves_to_search})
        self._offsets.append(self._offsets[-1] + len(shard))

    def _open_vectors(self, count: int, dim: int) -> None:
        assert self._dir is not None
        dtype = np.int8 if self.storage == "int8" else np.float32
        self._vectors = np.memmap(self._dir / _VECTORS, dtype=dtype, mode="r", shape=(count, dim))
        self._scales = (np.memmap(self._dir / _SCALES, np.float32, "r", shape=(count,))
                        if self.storage == "int8" else None)

    # -- search --------------------------------------------------------------------------------
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        depth = max(self.reorder_num_neighbors, k)
        best_scores, best_rows = [], []
        for searcher, plan, offset in zip(self._searchers, self._plans, self._offsets):
            n = min(depth, plan["rows"])
            kwargs: dict[str, Any] = {"final_num_neighbors": n}
            if plan["mode"] == "tree":
                kwargs["leaves_to_search"] = plan["leaves_to_search"]
            rows, hashed = searcher.search_batched(queries, **kwargs)
            rows = np.asarray(rows, np.int64) + offset
            missing = np.isnan(np.asarray(hashed, np.float32))
            rows[missing] = offset
            # Rescore each shard's candidates exactly before merging: hashed scores from
            # different shards' codebooks are not comparable with each other.
            exact = self._rescore(queries, rows)
            exact[missing] = -np.inf
            top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            best_scores.append(np.take_along_axis(exact, top, 1))
            best_rows.append(np.take_along_axis(rows, top, 1))
        scores = np.concatenate(best_scores, axis=1)
        rows = np.concatenate(best_rows, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)

    def _rescore(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact dot products [nq, depth] of each query with its candidate rows, read from disk."""
        assert self._vectors is not None
        out = np.empty(rows.shape, np.float32)
        for i in range(len(queries)):
            gathered = np.asarray(self._vectors[rows[i]], np.float32)
            if self._scales is not None:
                gathered *= np.asarray(self._scales[rows[i]])[:, None]
            out[i] = gathered @ queries[i]
        return out

    # -- persistence ----------------------------------------------------------------------------
    def _save_data(self, directory: Path) -> None:
        assert self._dir is not None
        shutil.copyfile(self._dir / _VECTORS, directory / _VECTORS)
        if self.storage == "int8":
            shutil.copyfile(self._dir / _SCALES, directory / _SCALES)
        for i, searcher in enumerate(self._searchers):
            target = directory / f"shard_{i:05d}"
            target.mkdir()
            searcher.serialize(str(target), relative_path=True)
        atomic_write_text(directory / _SHARDS, json.dumps(
            {"offsets": self._offsets, "plans": self._plans}, indent=2))

    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> tuple[int, int]:
        info = json.loads((directory / _SHARDS).read_text())
        self._offsets, self._plans = list(info["offsets"]), list(info["plans"])
        count, dim = self._offsets[-1], int(manifest["dimension"])
        itemsize = 1 if self.storage == "int8" else 4
        if (directory / _VECTORS).stat().st_size != count * dim * itemsize:
            raise IndexIntegrityError(f"{directory / _VECTORS} does not hold {count} x {dim} "
                                      f"{self.storage} rows; rebuild the index")
        self._searchers = []
        for i in range(len(self._plans)):
            shard = directory / f"shard_{i:05d}"
            if not shard.is_dir():
                raise IndexIntegrityError(f"{shard} is missing; rebuild the index")
            self._searchers.append(load_scann_searcher(shard))
        self._dir = directory
        self._open_vectors(count, dim)
        return count, dim
