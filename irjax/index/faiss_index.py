"""faiss indexes, kept as a well-known reference point to compare our JAX and ScaNN search with.

structure="flat" (default) is IndexFlatIP: exact, so it must agree with ExactIndex. "ivf"
(IndexIVFFlat, nlist ~ sqrt(n), probing 15% of lists or ~2k points, whichever is more) and
"hnsw" (IndexHNSWFlat) are the usual approximate baselines. Rows that an approximate structure
returns short of k (faiss pads them with -1) are re-run exhaustively so every row is complete.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from irjax.index.base import Index, IndexIntegrityError, register_index

FAISS_NAME = "faiss.index"
STRUCTURES = ("flat", "ivf", "hnsw")
# faiss warns below 39 training points per centroid; keep lists at least that full.
_MIN_POINTS_PER_LIST = 39


def _positive_int_or_none(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


@register_index
class FaissIndex(Index):
    """Inner-product faiss index of the chosen structure."""

    kind = "faiss"
    required_files = (FAISS_NAME,)

    def __init__(self, metric: str = "dot", structure: str = "flat", nlist: int | None = None,
                 nprobe: int | None = None, hnsw_m: int = 32, ef_construction: int = 200,
                 ef_search: int = 128) -> None:
        super().__init__(metric)
        if structure not in STRUCTURES:
            raise ValueError(f"unknown faiss structure {structure!r}; choose one of "
                             f"{list(STRUCTURES)}")
        for name, value in (("nlist", nlist), ("nprobe", nprobe), ("hnsw_m", hnsw_m),
                            ("ef_construction", ef_construction), ("ef_search", ef_search)):
            _positive_int_or_none(name, value)
        self.structure = structure
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self._index: Any = None
        self._params: dict[str, int] = {}

    def options(self) -> dict[str, Any]:
        return {"structure": self.structure, "nlist": self.nlist, "nprobe": self.nprobe,
                "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search}

    def build_params(self) -> dict[str, Any]:
        return dict(self._params)

    def _build(self, vectors: np.ndarray) -> None:
        count, dim = vectors.shape
        if self.structure == "flat":
            index = faiss.IndexFlatIP(dim)
            self._params = {}
        elif self.structure == "ivf":
            nlist = self.nlist or max(1, min(round(math.sqrt(count)),
                                             count // _MIN_POINTS_PER_LIST))
            if nlist > count:
                raise ValueError(f"nlist={nlist} exceeds the corpus size {count}; lower nlist")
            # Same rule as the ScaNN tree (15% of lists, at least ~2k points) for fair comparisons.
            nprobe = self.nprobe or max(math.ceil(0.15 * nlist), math.ceil(2048 * nlist / count))
            nprobe = min(nprobe, nlist)
            # faiss's Python wrapper keeps the quantizer alive as long as the IVF index.
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist,
                                       faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            self._params = {"nlist": nlist, "nprobe": nprobe}
        else:
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            self._params = {"ef_search": self.ef_search}
        index.add(vectors)
        self._index = index

    def _search_params(self, k: int, exhaustive: bool) -> Any:
        if self.structure == "ivf":
            nprobe = self._params["nlist"] if exhaustive else self._params["nprobe"]
            return faiss.SearchParametersIVF(nprobe=nprobe)
        if self.structure == "hnsw":
            ef = max(self._params["ef_search"], k)
            return faiss.SearchParametersHNSW(efSearch=max(ef, 4 * k) if exhaustive else ef)
        return None

    def _run(self, queries: np.ndarray, k: int, exhaustive: bool) -> tuple[np.ndarray, np.ndarray]:
        params = self._search_params(k, exhaustive)
        if params is None:
            scores, rows = self._index.search(queries, k)
        else:
            scores, rows = self._index.search(queries, k, params=params)
        return np.asarray(scores, dtype=np.float32), np.asarray(rows, dtype=np.int64)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self._run(queries, k, exhaustive=False)
        short = np.flatnonzero((rows < 0).any(axis=1))
        if short.size:
            scores[short], rows[short] = self._run(queries[short], k, exhaustive=True)
        if (rows < 0).any():
            raise RuntimeError(f"faiss {self.structure} index returned fewer than k={k} results "
                               "even when searched exhaustively; use structure='flat'")
        return scores, rows

    def _save_data(self, directory: Path) -> None:
        faiss.write_index(self._index, str(directory / FAISS_NAME))

    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> tuple[int, int]:
        path = directory / FAISS_NAME
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise IndexIntegrityError(f"faiss cannot read {path} ({e}); rebuild the index") from e
        expected = {"flat": faiss.IndexFlatIP, "ivf": faiss.IndexIVFFlat,
                    "hnsw": faiss.IndexHNSWFlat}[self.structure]
        if not isinstance(index, expected):
            raise IndexIntegrityError(f"{path} holds a {type(index).__name__}, but the manifest "
                                      f"says structure={self.structure!r}; rebuild the index")
        self._index = index
        self._params = {key: int(value) for key, value in manifest["build_params"].items()}
        return int(index.ntotal), int(index.d)
