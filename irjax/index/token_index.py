"""A token-level index for late-interaction retrieval (XTR / ColBERT), built by streaming.

Multi-vector corpora hold tens of token vectors per document, so the token matrix is often larger
than RAM would like. `TokenIndex.build_streaming` consumes (doc ids, per-doc token arrays) chunks
and appends each chunk to raw files on disk, so the Python side never holds more than one chunk:

  tokens.bin     the stored token matrix [num_tokens, dim], float32 or int8 (np.memmap)
  scales.bin     float32 per-token scales, only for dtype='int8' (x ~= q * scale)
  token_doc.bin  int32 document index of every token row
  doc_offsets.bin int64 [num_docs + 1]: tokens of doc i are rows offsets[i]:offsets[i+1]

The search structure (via `create_index`) is then built over the memmapped float32 matrix. 'scann'
and 'exact' keep their own in-memory copy (ScaNN peaks at ~2.4x the float32 matrix while it
builds); 'scann_sharded' (`irjax.index.sharded_scann`) builds shard by shard and keeps only hash
codes in RAM, rescoring candidates from disk, so its peak is one shard plus the codes.

int8 storage is symmetric per-token quantisation (scale = max|x| / 127), costing dim + 4 bytes a
token instead of 4 * dim; it serves `doc_tokens` (MaxSim reranking). The ANN is still built over
the original float32 vectors, streamed to a temporary file that is deleted after the build,
because ScaNN and the exact index both want float32 input anyway.
"""
from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from irjax.files import (atomic_directory, atomic_write_text, remove_orphan_temporaries,
                         sha256_file, temporary_prefix)
from irjax.index.base import (FORMAT_VERSION, MANIFEST_NAME, Index, IndexIntegrityError,
                              create_index, ids_checksum, load_index, read_manifest, verify_files)
from irjax.index.quantization import quantize_int8
from irjax.index.xtr_scoring import xtr_score_candidates

KIND = "token_index"
DTYPES = ("float32", "int8")
# 'scann_sharded' bounds the build's memory by a shard and keeps only hash codes in RAM.
ANN_KINDS = ("scann", "exact", "scann_sharded")
ANN_DIR = "ann"
DOC_IDS_NAME = "doc_ids.json"
_FILES = {"tokens": "tokens.bin", "scales": "scales.bin", "token_doc": "token_doc.bin",
          "doc_offsets": "doc_offsets.bin"}


@dataclasses.dataclass(frozen=True)
class TokenIndexStats:
    """What a build cost: sizes of the stored matrix versus raw float32, and peak process RSS."""

    num_docs: int
    num_tokens: int
    dim: int
    dtype: str
    bytes_per_token: int  # stored matrix only: 4*dim (float32) or dim + 4 (int8 + scale)
    stored_matrix_bytes: int
    raw_float32_bytes: int
    peak_rss_bytes: int  # ru_maxrss of the process after the build (a lifetime maximum)


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


class TokenIndex:
    """Token vectors of many documents, searchable per token, with per-document token lookup."""

    def __init__(self, directory: Path, doc_ids: list[str], dim: int, dtype: str,
                 ann: Index, stats: TokenIndexStats, kind: str,
                 index_options: dict[str, Any]) -> None:
        self._dir = directory
        self._doc_ids = doc_ids
        self.dim = dim
        self.dtype = dtype
        self._ann = ann
        self.stats = stats
        self.kind = kind
        self.index_options = index_options
        n = stats.num_tokens
        self._tokens = np.memmap(directory / _FILES["tokens"], dtype=dtype, mode="r",
                                 shape=(n, dim))
        self._scales = (np.memmap(directory / _FILES["scales"], np.float32, "r", shape=(n,))
                        if dtype == "int8" else None)
        self._token_doc = np.memmap(directory / _FILES["token_doc"], np.int32, "r", shape=(n,))
        self._offsets = np.memmap(directory / _FILES["doc_offsets"], np.int64, "r",
                                  shape=(len(doc_ids) + 1,))

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build_streaming(cls, chunks: Iterable[tuple[Sequence[str], Sequence[np.ndarray]]],
                        kind: str = "scann", dtype: str = "float32",
                        workdir: str | None = None, **index_options: Any) -> "TokenIndex":
        """Appends each chunk to on-disk files, then indexes the memmapped token matrix.

        `workdir` holds the token files while the index lives (a temporary directory, removed
        when the index is garbage-collected, if not given)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        if kind not in ANN_KINDS:
            raise ValueError(f"kind must be one of {ANN_KINDS}, got {kind!r}")
        parent = workdir or tempfile.gettempdir()
        remove_orphan_temporaries(parent, name="irjax_tokens")  # of runs killed mid-build
        directory = Path(tempfile.mkdtemp(prefix=temporary_prefix("irjax_tokens"), suffix=".tmp",
                                          dir=parent))
        owned = workdir is None
        try:
            doc_ids, dim, num_tokens = cls._write_chunks(chunks, directory, dtype)
            raw_path = directory / ("raw_f32.tmp" if dtype == "int8" else _FILES["tokens"])
            raw = np.memmap(raw_path, np.float32, "r", shape=(num_tokens, dim))
            ann = create_index(kind, **index_options)
            ann.build(raw, [str(i) for i in range(num_tokens)])
            del raw
            if dtype == "int8":
                raw_path.unlink()
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        itemsize = dim + 4 if dtype == "int8" else 4 * dim
        stats = TokenIndexStats(len(doc_ids), num_tokens, dim, dtype, itemsize,
                                itemsize * num_tokens, 4 * dim * num_tokens, _peak_rss_bytes())
        index = cls(directory, doc_ids, dim, dtype, ann, stats, kind, index_options)
        if owned:
            weakref.finalize(index, shutil.rmtree, directory, True)
        return index

    @staticmethod
    def _write_chunks(chunks: Iterable[tuple[Sequence[str], Sequence[np.ndarray]]],
                      directory: Path, dtype: str) -> tuple[list[str], int, int]:
        doc_ids: list[str] = []
        seen: set[str] = set()
        dim: int | None = None
        num_tokens = 0
        offsets = [0]
        raw_name = "raw_f32.tmp" if dtype == "int8" else _FILES["tokens"]
        names = [raw_name, _FILES["token_doc"]] + ([_FILES["tokens"], _FILES["scales"]]
                                                    if dtype == "int8" else [])
        files = {name: open(directory / name, "wb") for name in names}
        try:
            for chunk_ids, chunk_vectors in chunks:
                if len(chunk_ids) != len(chunk_vectors):
                    raise ValueError(f"a chunk has {len(chunk_ids)} doc ids but "
                                     f"{len(chunk_vectors)} token arrays; pass one per doc")
                for doc_id, vectors in zip(chunk_ids, chunk_vectors):
                    if not isinstance(doc_id, str) or doc_id in seen:
                        raise ValueError(f"doc ids must be unique strings; bad id {doc_id!r}")
                    x = np.ascontiguousarray(vectors, dtype=np.float32)
                    if x.ndim != 2 or x.shape[0] == 0:
                        raise ValueError(f"doc {doc_id!r}: token vectors must be a non-empty "
                                         f"[n_tokens, dim] array, got shape {x.shape}")
                    if dim is None:
                        dim = x.shape[1]
                    if x.shape[1] != dim:
                        raise ValueError(f"doc {doc_id!r} has dim {x.shape[1]}, earlier docs {dim}")
                    if not np.isfinite(x).all():
                        raise ValueError(f"doc {doc_id!r} has NaN or infinite token values")
                    files[raw_name].write(x.tobytes())
                    files[_FILES["token_doc"]].write(
                        np.full(len(x), len(doc_ids), np.int32).tobytes())
                    if dtype == "int8":
                        q, scale = quantize_int8(x)
                        files[_FILES["tokens"]].write(q.tobytes())
                        files[_FILES["scales"]].write(scale.tobytes())
                    seen.add(doc_id)
                    doc_ids.append(doc_id)
                    num_tokens += len(x)
                    offsets.append(num_tokens)
        finally:
            for f in files.values():
                f.close()
        if dim is None:
            raise ValueError("no documents were streamed; pass at least one non-empty chunk")
        np.asarray(offsets, np.int64).tofile(directory / _FILES["doc_offsets"])
        return doc_ids, dim, num_tokens

    # -- queries ---------------------------------------------------------------------------------
    @property
    def doc_ids(self) -> list[str]:
        return list(self._doc_ids)

    @property
    def num_tokens(self) -> int:
        return self.stats.num_tokens

    def search_tokens(self, query_tokens: np.ndarray,
                      k_prime: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k' index tokens per query token: (scores [n_q, k'], doc indices [n_q, k'])."""
        result = self._ann.search(query_tokens, k_prime)
        return result.scores, np.asarray(self._token_doc[result.indices], dtype=np.int64)

    def doc_tokens(self, doc_index: int) -> np.ndarray:
        """Token vectors [n_d, dim] of one doc as float32 (dequantised when stored as int8)."""
        if not 0 <= doc_index < len(self._doc_ids):
            raise IndexError(f"doc_index {doc_index} out of range [0, {len(self._doc_ids)})")
        lo, hi = int(self._offsets[doc_index]), int(self._offsets[doc_index + 1])
        rows = np.asarray(self._tokens[lo:hi], dtype=np.float32)
        if self._scales is not None:
            rows = rows * np.asarray(self._scales[lo:hi])[:, None]
        return rows

    def xtr_search(self, query_tokens: np.ndarray, k_prime: int,
                   top_k: int) -> tuple[list[str], np.ndarray]:
        """XTR retrieval: score docs from retrieved tokens only (imputing missing similarities)."""
        scores, docs = self.search_tokens(query_tokens, k_prime)
        candidates, doc_scores = xtr_score_candidates(scores, docs)
        order = np.argsort(-doc_scores, kind="stable")[:top_k]
        return [self._doc_ids[i] for i in candidates[order]], doc_scores[order]

    # -- persistence -----------------------------------------------------------------------------
    def _data_files(self) -> list[str]:
        return [name for key, name in _FILES.items() if key != "scales" or self.dtype == "int8"]

    def save(self, directory: str | Path) -> None:
        """Writes token files, the ANN and a manifest atomically (all or nothing)."""
        with atomic_directory(directory) as tmp:
            for name in self._data_files():
                shutil.copyfile(self._dir / name, tmp / name)
            atomic_write_text(tmp / DOC_IDS_NAME, json.dumps(self._doc_ids, ensure_ascii=False))
            self._ann.save(tmp / ANN_DIR)
            files = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p),
                                                     "size": p.stat().st_size}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = {"format_version": FORMAT_VERSION, "kind": KIND, "dimension": self.dim,
                        "count": self.num_tokens, "metric": "dot",
                        "ids_sha256": ids_checksum(self._doc_ids), "files": files,
                        "options": {"kind": self.kind, "dtype": self.dtype,
                                    "index_options": self.index_options},
                        "build_params": dataclasses.asdict(self.stats)}
            atomic_write_text(tmp / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path,
             expected_ids_checksum: str | None = None) -> "TokenIndex":
        """Loads after checking every file's size and sha256 against the manifest."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest["kind"] != KIND:
            raise IndexIntegrityError(f"{directory} holds a {manifest['kind']!r} index, not a "
                                      "token index")
        options = manifest["options"]
        dtype = options.get("dtype")
        if dtype not in DTYPES:
            raise IndexIntegrityError(f"{directory}: manifest dtype {dtype!r} is not one of "
                                      f"{list(DTYPES)}")
        required = [name for key, name in _FILES.items() if key != "scales" or dtype == "int8"]
        verify_files(directory, manifest, [*required, DOC_IDS_NAME, f"{ANN_DIR}/{MANIFEST_NAME}"])
        doc_ids = json.loads((directory / DOC_IDS_NAME).read_text(encoding="utf-8"))
        if ids_checksum(doc_ids) != manifest["ids_sha256"]:
            raise IndexIntegrityError(f"{directory / DOC_IDS_NAME} does not match the manifest")
        if expected_ids_checksum is not None and expected_ids_checksum != manifest["ids_sha256"]:
            raise IndexIntegrityError(f"{directory} was built over different document ids")
        n, dim = manifest["count"], manifest["dimension"]
        itemsize = 1 if dtype == "int8" else 4
        expected_sizes = {_FILES["tokens"]: n * dim * itemsize, _FILES["scales"]: 4 * n,
                          _FILES["token_doc"]: 4 * n, _FILES["doc_offsets"]: 8 * (len(doc_ids) + 1)}
        for name in required:
            size = (directory / name).stat().st_size
            if size != expected_sizes[name]:
                raise IndexIntegrityError(f"{directory / name} is {size} bytes but {n} tokens of "
                                          f"dim {dim} need {expected_sizes[name]}; rebuild")
        ann = load_index(directory / ANN_DIR, expected_dim=dim)
        if len(ann) != n:
            raise IndexIntegrityError(f"{directory / ANN_DIR} holds {len(ann)} tokens, not {n}")
        try:
            stats = TokenIndexStats(**manifest["build_params"])
        except TypeError as e:
            raise IndexIntegrityError(f"{directory}: manifest build_params are not build "
                                      f"stats ({e})") from e
        return cls(directory, doc_ids, dim, dtype, ann, stats, options.get("kind", ann.kind),
                   options.get("index_options", {}))

    def __repr__(self) -> str:
        return (f"TokenIndex({self.stats.num_docs} docs, {self.num_tokens}x{self.dim} "
                f"{self.dtype}, {self.kind})")
