"""The sparse-index contract (learned sparse retrieval: SPLADE, BM25-like term weights) and its
exact reference, a scipy.sparse CSR scorer.

Documents and queries are CSR matrices [rows, vocab] of non-negative term weights; the score is
the dot product. Like the dense `Index` (irjax/index/base.py, whose manifest, file checks and ids
checksum are reused), an index builds, searches, saves atomically with a manifest, and loads only
after every file passes its sha256 check. Unlike it, a query returns only documents sharing a term
with it (as an inverted index and Lucene do): a zero score is not a match, so rows may be shorter
than k. `bytes_per_doc` is the stored size of a document's postings (average postings per document
times bytes per posting as stored), the figure a cost/quality table compares.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import scipy.sparse as sp

from irjax.files import atomic_directory, atomic_write_text, sha256_file
from irjax.index.base import (FORMAT_VERSION, IDS_NAME, MANIFEST_NAME, IndexIntegrityError,
                              ids_checksum, read_manifest, validate_ids, verify_files)

MATRIX_NAME = "documents.npz"


@dataclasses.dataclass(frozen=True)
class SparseSearchResult:
    """Per query: row indices and scores of its matches, best first (ties: lower row first)."""

    indices: list[np.ndarray]
    scores: list[np.ndarray]
    ids: list[list[str]]

    def to_run(self, query_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """{query_id: {doc_id: score}} for evaluation."""
        if len(query_ids) != len(self.ids):
            raise ValueError(f"got {len(query_ids)} query ids for {len(self.ids)} result rows")
        return {q: dict(zip(docs, map(float, scores)))
                for q, docs, scores in zip(query_ids, self.ids, self.scores)}


def as_csr(matrix: Any, name: str, dim: int | None = None) -> sp.csr_matrix:
    """A canonical float32 CSR matrix (sorted, summed duplicates, explicit zeros dropped), or an
    error naming what is wrong with it."""
    if not sp.issparse(matrix):
        matrix = np.asarray(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"{name} must be a 2-D [rows, vocab] matrix, got shape {matrix.shape}")
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.sort_indices()
    if not np.isfinite(csr.data).all():
        raise ValueError(f"{name} has NaN or infinite weights; fix the encoder output")
    if (csr.data < 0).any():
        raise ValueError(f"{name} has negative weights; sparse retrieval expects term weights >= 0")
    if dim is not None and csr.shape[1] != dim:
        raise ValueError(f"{name} has {csr.shape[1]} columns but the index vocabulary has {dim}; "
                         "encode with the same tokenizer/model")
    return csr


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best positive entries of a dense score row: (indices, scores), best first, ties by
    lower index. Zero scores are not matches."""
    positive = np.flatnonzero(scores > 0)
    if positive.size > k:
        kth = np.partition(scores[positive], positive.size - k)[positive.size - k]
        positive = positive[scores[positive] >= kth]
    order = np.lexsort((positive, -scores[positive]))[:k]
    chosen = positive[order]
    return chosen.astype(np.int64), scores[chosen].astype(np.float32)


class SparseIndex(abc.ABC):
    """Build / search / save / load / verify over CSR term-weight matrices."""

    kind: ClassVar[str]
    required_files: ClassVar[tuple[str, ...]] = ()
    bytes_per_posting: ClassVar[int]

    def __init__(self) -> None:
        self._ids: list[str] | None = None
        self._id_array: np.ndarray | None = None
        self._dim = 0
        self._nnz = 0

    # -- backend hooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """Constructor keyword arguments that recreate this index's settings."""

    @abc.abstractmethod
    def _build(self, docs: sp.csr_matrix) -> None: ...

    @abc.abstractmethod
    def _search(self, queries: sp.csr_matrix, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per query (indices, scores), best first, positive scores only, at most k."""

    @abc.abstractmethod
    def _save_data(self, directory: Path) -> None: ...

    @abc.abstractmethod
    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> None: ...

    # -- public API ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self._ids is None else len(self._ids)

    @property
    def ids(self) -> list[str]:
        self._require_built()
        return list(self._ids or [])

    @property
    def postings_per_doc(self) -> float:
        return self._nnz / max(len(self), 1)

    @property
    def bytes_per_doc(self) -> float:
        """Average postings per document times the bytes one posting takes as stored."""
        return self.postings_per_doc * self.bytes_per_posting

    def build(self, docs: Any, ids: Sequence[str]) -> "SparseIndex":
        csr = as_csr(docs, "documents")
        if csr.shape[0] == 0:
            raise ValueError("cannot build an index over zero documents")
        id_list = validate_ids(ids, csr.shape[0])
        self._build(csr)
        self._set(id_list, csr.shape[1], int(csr.nnz))
        return self

    def search(self, queries: Any, k: int) -> SparseSearchResult:
        """The (at most) k best matching documents per query row."""
        self._require_built()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        csr = as_csr(queries, "queries", self._dim)
        indices, scores = self._search(csr, min(int(k), len(self)))
        assert self._id_array is not None
        return SparseSearchResult(indices, scores, [self._id_array[i].tolist() for i in indices])

    def save(self, directory: str | os.PathLike) -> None:
        """Writes the data, ids and a manifest (last) atomically."""
        self._require_built()
        with atomic_directory(directory, last=(MANIFEST_NAME,)) as tmp:
            self._save_data(tmp)
            atomic_write_text(tmp / IDS_NAME, json.dumps(self._ids, ensure_ascii=False))
            files = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = {"format_version": FORMAT_VERSION, "kind": self.kind, "dimension": self._dim,
                        "count": len(self), "metric": "dot", "ids_sha256": ids_checksum(self._ids or []),
                        "files": files, "options": self.options(),
                        "build_params": {"nnz": self._nnz}}
            atomic_write_text(tmp / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True))

    @classmethod
    def verify(cls, directory: str | os.PathLike) -> dict[str, Any]:
        """The manifest of a saved index of this kind after checking every file it lists."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest["kind"] != cls.kind:
            raise IndexIntegrityError(f"{directory} holds a {manifest['kind']!r} index, not {cls.kind!r}")
        verify_files(directory, manifest, (IDS_NAME, *cls.required_files))
        return manifest

    @classmethod
    def load(cls, directory: str | os.PathLike,
             expected_ids_checksum: str | None = None) -> "SparseIndex":
        directory = Path(directory)
        manifest = cls.verify(directory)
        ids = json.loads((directory / IDS_NAME).read_text(encoding="utf-8"))
        if ids_checksum(ids) != manifest["ids_sha256"] or len(ids) != manifest["count"]:
            raise IndexIntegrityError(f"{directory / IDS_NAME} does not match the manifest; rebuild")
        if expected_ids_checksum is not None and manifest["ids_sha256"] != expected_ids_checksum:
            raise IndexIntegrityError(f"{directory} was built over other documents (ids checksum "
                                      "mismatch); rebuild it for this corpus")
        try:
            index = cls(**manifest["options"])
        except (TypeError, ValueError) as e:
            raise IndexIntegrityError(f"{directory}/{MANIFEST_NAME}: options rejected ({e})") from e
        index._load_data(directory, manifest)
        index._set(ids, int(manifest["dimension"]), int(manifest["build_params"]["nnz"]))
        return index

    def _set(self, ids: list[str], dim: int, nnz: int) -> None:
        self._ids, self._id_array, self._dim, self._nnz = ids, np.asarray(ids, dtype=object), dim, nnz

    def _require_built(self) -> None:
        if self._ids is None:
            raise RuntimeError(f"this {type(self).__name__} is empty; call build() or load() first")


class ExactSparseIndex(SparseIndex):
    """Exact dot products, CSR queries x CSR documents^T, in blocks of queries: the reference.
    A posting is stored as an int32 column and a float32 weight (8 bytes)."""

    kind = "sparse_exact"
    required_files = (MATRIX_NAME,)
    bytes_per_posting = 8

    def __init__(self, query_block: int = 256) -> None:
        super().__init__()
        self.query_block = int(query_block)
        self._docs_t: sp.csc_matrix | None = None

    def options(self) -> dict[str, Any]:
        return {"query_block": self.query_block}

    def _build(self, docs: sp.csr_matrix) -> None:
        self._docs = docs
        self._docs_t = docs.T.tocsr()

    def _search(self, queries: sp.csr_matrix, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        indices, scores = [], []
        for start in range(0, queries.shape[0], self.query_block):
            block = (queries[start:start + self.query_block] @ self._docs_t).toarray()
            for row in block:
                i, s = top_k_rows(row, k)
                indices.append(i)
                scores.append(s)
        return indices, scores

    def _save_data(self, directory: Path) -> None:
        sp.save_npz(directory / MATRIX_NAME, self._docs, compressed=False)

    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> None:
        docs = as_csr(sp.load_npz(directory / MATRIX_NAME), str(directory / MATRIX_NAME))
        if docs.shape != (manifest["count"], manifest["dimension"]):
            raise IndexIntegrityError(f"{directory / MATRIX_NAME} has shape {docs.shape}, the manifest "
                                      f"{(manifest['count'], manifest['dimension'])}; rebuild")
        self._build(docs)


_BACKENDS = {"exact": "irjax.index.sparse:ExactSparseIndex",
             "seismic": "irjax.index.seismic_index:SeismicSparseIndex"}
SPARSE_INDEXES = tuple(_BACKENDS)


def sparse_index_class(kind: str) -> type[SparseIndex]:
    """'exact' (scipy CSR) or 'seismic' (pyseismic-lsr, imported on first use)."""
    if kind not in _BACKENDS:
        raise ValueError(f"unknown sparse index {kind!r}; choose one of {sorted(_BACKENDS)}")
    import importlib

    module, name = _BACKENDS[kind].split(":")
    return getattr(importlib.import_module(module), name)
