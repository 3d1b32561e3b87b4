"""Seismic (Bruch et al., SIGIR 2024; pyseismic-lsr, import name `seismic`) behind the sparse-index
contract: an approximate inverted index for learned sparse vectors.

Build: each term's posting list keeps its `n_postings * max_fraction` largest weights (the global
budget is `n_postings` postings per term on average), is cut into blocks by clustering, and each
block gets a summary (a per-term maximum, keeping `summary_energy` of its mass). Search: only the
query's `query_cut` heaviest terms are visited, and a block is scored only when its summary's dot
product with the query times `heap_factor` beats the current k-th score; survivors are scored
exactly from the forward index. With n_postings >= documents, max_fraction = 1, summary_energy = 1,
query_cut >= query terms and heap_factor = 1 nothing is pruned and a summary bounds every score in
its block, so the result is the exact top-k (`SeismicSparseIndex.exhaustive`, tested against the
CSR scorer). The forward index stores a posting as a 16-bit term id and a 16-bit float (4 bytes),
which is also why scores differ from float32 ones in the fourth decimal.

Documents are added by integer term id (`add_documents_by_id`, CSR layout) under their row number,
so queries name terms as decimal strings; documents with no term are left out (they can never
match) and the row numbers map results back to ids.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from irjax.index.base import IndexIntegrityError
from irjax.index.sparse import SparseIndex

INDEX_STEM = "seismic"
INDEX_FILE = INDEX_STEM + ".index.seismic"
MAX_TERMS = 65536  # SeismicIndex stores term ids as u16 (SeismicIndexLV is the large-vocab variant)


def _seismic() -> Any:
    import seismic

    return seismic


class SeismicSparseIndex(SparseIndex):
    """pyseismic-lsr's SeismicIndex; build knobs as in its `build_from_dataset`, query knobs
    `query_cut` and `heap_factor` as in its `search`."""

    kind = "sparse_seismic"
    required_files = (INDEX_FILE,)
    bytes_per_posting = 4  # u16 term id + f16 weight in the forward index

    def __init__(self, n_postings: int = 3500, centroid_fraction: float = 0.1,
                 min_cluster_size: int = 2, summary_energy: float = 0.4, max_fraction: float = 1.5,
                 doc_cut: int = 15, query_cut: int = 10, heap_factor: float = 0.7,
                 num_threads: int = 0) -> None:
        super().__init__()
        if n_postings < 1 or not 0 < centroid_fraction <= 1 or not 0 < summary_energy <= 1:
            raise ValueError("seismic needs n_postings >= 1, 0 < centroid_fraction <= 1 and "
                             f"0 < summary_energy <= 1; got {n_postings}, {centroid_fraction}, "
                             f"{summary_energy}")
        if query_cut < 1 or not 0 < heap_factor <= 1:
            raise ValueError(f"query_cut must be >= 1 and 0 < heap_factor <= 1, got {query_cut}, "
                             f"{heap_factor}")
        self.n_postings, self.centroid_fraction = int(n_postings), float(centroid_fraction)
        self.min_cluster_size, self.summary_energy = int(min_cluster_size), float(summary_energy)
        self.max_fraction, self.doc_cut = float(max_fraction), int(doc_cut)
        self.query_cut, self.heap_factor = int(query_cut), float(heap_factor)
        self.num_threads = int(num_threads)
        self._index: Any = None
        self.index_bytes = 0

    @classmethod
    def exhaustive(cls, num_docs: int, vocab_size: int, **options: Any) -> "SeismicSparseIndex":
        """Settings under which nothing is pruned (module docstring): the exact top-k."""
        return cls(n_postings=max(num_docs, 1), max_fraction=1.0, summary_energy=1.0,
                   query_cut=vocab_size, heap_factor=1.0, **options)

    def options(self) -> dict[str, Any]:
        return {"n_postings": self.n_postings, "centroid_fraction": self.centroid_fraction,
                "min_cluster_size": self.min_cluster_size, "summary_energy": self.summary_energy,
                "max_fraction": self.max_fraction, "doc_cut": self.doc_cut,
                "query_cut": self.query_cut, "heap_factor": self.heap_factor,
                "num_threads": self.num_threads}

    def _build(self, docs: sp.csr_matrix) -> None:
        if docs.shape[1] > MAX_TERMS:
            raise ValueError(f"SeismicIndex stores term ids in 16 bits; a vocabulary of "
                             f"{docs.shape[1]} needs the large-vocabulary variant")
        seismic = _seismic()
        dataset = seismic.SeismicDataset(dim=docs.shape[1])
        dataset.add_documents_by_id([str(i) for i in range(docs.shape[0])],
                                    docs.indices.astype(np.int64), docs.data.astype(np.float32),
                                    docs.indptr.astype(np.int64))
        self._index = seismic.SeismicIndex.build_from_dataset(
            dataset, n_postings=self.n_postings, centroid_fraction=self.centroid_fraction,
            min_cluster_size=self.min_cluster_size, summary_energy=self.summary_energy,
            max_fraction=self.max_fraction, doc_cut=self.doc_cut, num_threads=self.num_threads)

    def _search(self, queries: sp.csr_matrix, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        seismic = _seismic()
        string = seismic.get_seismic_string()
        rows = [queries[i] for i in range(queries.shape[0])]
        nonempty = [i for i, r in enumerate(rows) if r.nnz]
        indices = [np.zeros(0, np.int64) for _ in rows]
        scores = [np.zeros(0, np.float32) for _ in rows]
        if not nonempty:
            return indices, scores
        results = self._index.batch_search(
            np.array([str(i) for i in nonempty], dtype=string),
            [np.array([str(t) for t in rows[i].indices], dtype=string) for i in nonempty],
            [rows[i].data.astype(np.float32) for i in nonempty],
            k=k, query_cut=self.query_cut, heap_factor=self.heap_factor,
            num_threads=self.num_threads)
        by_query: dict[int, list[tuple[int, float]]] = {i: [] for i in nonempty}
        for hits in results:  # batch_search answers in no particular query order: key by query id
            for query, score, doc in hits:
                if score > 0:
                    by_query[int(query)].append((int(doc), float(score)))
        for i, hits in by_query.items():
            hits.sort(key=lambda h: (-h[1], h[0]))
            indices[i] = np.array([h[0] for h in hits], np.int64)
            scores[i] = np.array([h[1] for h in hits], np.float32)
        return indices, scores

    def _save_data(self, directory: Path) -> None:
        self._index.save(str(directory / INDEX_STEM))
        self.index_bytes = (directory / INDEX_FILE).stat().st_size

    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> None:
        try:
            self._index = _seismic().SeismicIndex.load(str(directory / INDEX_FILE))
        except Exception as e:  # the Rust loader raises plain exceptions
            raise IndexIntegrityError(f"{directory / INDEX_FILE} could not be read ({e}); rebuild") from e
        self.index_bytes = os.path.getsize(directory / INDEX_FILE)
        if int(self._index.nnz) != int(manifest["build_params"]["nnz"]):
            raise IndexIntegrityError(f"{directory / INDEX_FILE} holds {self._index.nnz} postings, "
                                      f"the manifest {manifest['build_params']['nnz']}; rebuild")
