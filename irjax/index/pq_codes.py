"""A product-quantisation index over *given* centroids and codes: what JPQ trains.

Post-hoc PQ (compressed.py, codec 'pq') keeps faiss's centroids. JPQ (Zhan et al. 2021) keeps
faiss's document codes fixed but trains the centroids with the query encoder, so the index must
search codes with centroids that faiss never produced. Search is asymmetric distance computation:
the float query against each code's reconstruction, sum_j <q_j, C[j, code_j]>, via a per-query
lookup table [m, 256] -- m bytes per document scanned, exactly faiss IndexPQ's inner-product
scoring when the centroids are faiss's.

`build(vectors, ids)` trains faiss PQ on the vectors (the JPQ starting point);
`from_codes(centroids, codes, ids)` takes given ones; `with_centroids` swaps in trained centroids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from irjax.index.base import Index, IndexIntegrityError, register_index, validate_ids
from irjax.index.compressed import top_k_rows

CENTROIDS_NAME, CODES_NAME = "centroids.npy", "codes.npy"
CODEBOOK_SIZE = 256  # one byte per sub-space
_SCORE_BLOCK = 1 << 24  # bound on the [queries, docs] float32 tile scored at once


def check_pq_arrays(centroids: np.ndarray, codes: np.ndarray) -> None:
    """Raises ValueError unless centroids are float [m, 256, d/m] and codes uint8 [n, m]."""
    centroids, codes = np.asarray(centroids), np.asarray(codes)
    if centroids.ndim != 3 or centroids.shape[1] != CODEBOOK_SIZE or centroids.dtype.kind != "f":
        raise ValueError(f"centroids must be float [m, {CODEBOOK_SIZE}, d/m], got "
                         f"{centroids.dtype} {centroids.shape}")
    if not np.isfinite(centroids).all():
        raise ValueError("centroids hold NaN or infinite values; the training diverged")
    if codes.ndim != 2 or codes.dtype != np.uint8 or codes.shape[1] != centroids.shape[0]:
        raise ValueError(f"codes must be uint8 [n, m={centroids.shape[0]}], got {codes.dtype} "
                         f"{codes.shape}")


def faiss_pq(vectors: np.ndarray, subspaces: int, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [m, 256, d/m] float32, codes [n, m] uint8) of faiss PQ trained on `vectors`."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if isinstance(subspaces, bool) or not isinstance(subspaces, int) or subspaces < 1 \
            or d % subspaces:
        raise ValueError(f"pq subspaces={subspaces!r} must be a positive divisor of the dimension {d}")
    if n < CODEBOOK_SIZE:
        raise ValueError(f"PQ trains {CODEBOOK_SIZE} centroids per sub-space and needs >= "
                         f"{CODEBOOK_SIZE} vectors; got {n}")
    pq = faiss.ProductQuantizer(d, subspaces, 8)
    pq.cp.seed = seed
    pq.train(vectors)
    centroids = faiss.vector_to_array(pq.centroids).reshape(subspaces, CODEBOOK_SIZE, d // subspaces)
    return centroids.astype(np.float32), pq.compute_codes(vectors)


def adc_scores(queries: np.ndarray, centroids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """[q, n] inner products of float queries with the reconstructions of `codes`."""
    m, _, dsub = centroids.shape
    tables = np.einsum("qmd,mkd->qmk", queries.reshape(len(queries), m, dsub), centroids)
    out = np.empty((len(queries), len(codes)), np.float32)
    block = max(1, _SCORE_BLOCK // max(1, len(codes)))
    for start in range(0, len(queries), block):
        part = tables[start:start + block]
        acc = np.zeros((len(part), len(codes)), np.float32)
        for j in range(m):
            acc += part[:, j, codes[:, j]]
        out[start:start + block] = acc
    return out


@register_index
class PQCodesIndex(Index):
    """m-byte PQ codes searched with given (e.g. JPQ-trained) centroids (module docstring)."""

    kind = "pq_codes"
    required_files = (CENTROIDS_NAME, CODES_NAME)

    def __init__(self, metric: str = "dot", pq_subspaces: int = 48) -> None:
        if metric != "dot":
            raise ValueError("a pq_codes index scores inner products with reconstructions; "
                             "normalise vectors before building it and use metric='dot'")
        super().__init__(metric)
        if isinstance(pq_subspaces, bool) or not isinstance(pq_subspaces, int) or pq_subspaces < 1:
            raise ValueError(f"pq_subspaces must be a positive integer, got {pq_subspaces!r}")
        self.pq_subspaces = pq_subspaces
        self.centroids: np.ndarray | None = None
        self.codes: np.ndarray | None = None

    @classmethod
    def from_codes(cls, centroids: np.ndarray, codes: np.ndarray, ids: Sequence[str]
                   ) -> "PQCodesIndex":
        """An index over given centroids [m, 256, d/m] and codes [n, m] (no training)."""
        check_pq_arrays(centroids, codes)
        index = cls(pq_subspaces=int(centroids.shape[0]))
        index.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        index.codes = np.ascontiguousarray(codes)
        index._set_ids(validate_ids(ids, len(codes)), centroids.shape[0] * centroids.shape[2])
        return index

    def with_centroids(self, centroids: np.ndarray) -> "PQCodesIndex":
        """The same codes and ids searched with other centroids of the same shape."""
        self._require_built()
        assert self.centroids is not None and self.codes is not None
        if np.shape(centroids) != self.centroids.shape:
            raise ValueError(f"centroids of shape {np.shape(centroids)} cannot replace "
                             f"{self.centroids.shape}")
        return PQCodesIndex.from_codes(np.asarray(centroids), self.codes, self.ids)

    def options(self) -> dict[str, Any]:
        return {"pq_subspaces": self.pq_subspaces}

    @property
    def bytes_per_doc(self) -> int:
        """Bytes of codes search scans per document (the centroids are shared)."""
        return self.pq_subspaces

    def build_params(self) -> dict[str, Any]:
        return {"bytes_per_doc": self.bytes_per_doc}

    def _build(self, vectors: np.ndarray) -> None:
        self.centroids, self.codes = faiss_pq(vectors, self.pq_subspaces)

    def reconstruct(self) -> np.ndarray:
        """[n, d] float32 reconstructions of every document (for checks, not for search)."""
        assert self.centroids is not None and self.codes is not None
        m = self.centroids.shape[0]
        return self.centroids[np.arange(m)[None, :], self.codes].reshape(len(self.codes), -1)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.centroids is not None and self.codes is not None
        return top_k_rows(adc_scores(queries, self.centroids, self.codes), k)

    def _save_data(self, directory: Path) -> None:
        assert self.centroids is not None and self.codes is not None
        np.save(directory / CENTROIDS_NAME, self.centroids)
        np.save(directory / CODES_NAME, self.codes)

    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> tuple[int, int]:
        centroids = np.load(directory / CENTROIDS_NAME, allow_pickle=False)
        codes = np.load(directory / CODES_NAME, allow_pickle=False)
        try:
            check_pq_arrays(centroids, codes)
        except ValueError as e:
            raise IndexIntegrityError(f"{directory}: {e}; rebuild the index") from e
        if centroids.shape[0] != self.pq_subspaces:
            raise IndexIntegrityError(f"{directory}: {CENTROIDS_NAME} has {centroids.shape[0]} "
                                      f"sub-spaces, the manifest {self.pq_subspaces}; rebuild it")
        self.centroids, self.codes = centroids, codes
        return len(codes), centroids.shape[0] * centroids.shape[2]
