"""PromptReps retrieval (Zhuang et al. 2024): zero-shot dense, sparse and hybrid retrieval with
one prompt pass of an instruct LM per text (irjax/decoding/prompt_representations.py).

    corpus --PromptRepsEncoder, once, cached in parts--> dense [N, hidden] + sparse [N, words]
      'dense'   cosine over the last prompt position's hidden states (exact index)
      'sparse'  dot product of the word weights (sparse exact index, an inverted-index scorer)
      'hybrid'  the paper's fusion: each list min-max normalised, summed over the union

The corpus is encoded in parts of `part_size` documents (longest first) written atomically under
$IRJAX_CACHE_DIR/promptreps/<model+settings>-<corpus ids>-<doc budget>/, so a killed encoding
resumes and one encoding serves all three variants: an LM pass over a corpus is the slow part on
CPU. Costs per query (query encoding ms, LM tokens, FLOPs) and corpus throughput (docs/s, LM
tokens per document) land in metrics.json's timings; index sizes in bytes_per_doc.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from irjax.choices import check_choice
from irjax.data.collection import Collection
from irjax.data.runs import Run
from irjax.decoding.prompt_representations import Encoded, PromptRepsEncoder
from irjax.models.compute_budget import decoder_forward_flops
from irjax.files import cache_root
from irjax.index.base import create_index, ids_checksum
from irjax.index.sparse import sparse_index_class
from irjax.retrieval.fusion import min_max_normalised

log = logging.getLogger(__name__)

VARIANTS = ("dense", "sparse", "hybrid")


def hybrid_fusion(dense: dict[str, float], sparse: dict[str, float], k: int) -> dict[str, float]:
    """The paper's fusion of one query's two candidate lists: each list's scores min-max
    normalised to [0, 1] over the list, summed over the union; a document missing from a list
    gets that list's minimum (0). A list whose scores are all equal normalises to 1 each.
    Returns the k best of the union (ties: lower doc id first)."""
    a, b = min_max_normalised(dense), min_max_normalised(sparse)
    fused = {d: a.get(d, 0.0) + b.get(d, 0.0) for d in a.keys() | b.keys()}
    return dict(sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k])


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _read_part(path: Path, rows: np.ndarray, num_words: int) -> Encoded | None:
    """A cached part, or None when missing or written for other rows (a damaged one is moved
    aside with a warning and re-encoded)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            if not np.array_equal(f["rows"], rows):
                return None
            matrix = sp.csr_matrix((f["data"], f["indices"], f["indptr"]),
                                   shape=(len(rows), num_words))
            return Encoded(f["dense"], matrix, f["tokens"])
    except (OSError, ValueError, KeyError) as e:
        aside = path.with_name(path.name + f".corrupt-{int(time.time())}")
        log.warning("moving unreadable PromptReps cache part %s aside to %s (%s)", path, aside, e)
        os.replace(path, aside)
        return None


def _write_part(path: Path, rows: np.ndarray, encoded: Encoded) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    m = encoded.sparse
    np.savez(tmp, rows=rows, dense=encoded.dense, tokens=encoded.tokens, data=m.data,
             indices=m.indices, indptr=m.indptr)
    os.replace(tmp, path)


class PromptRepsRetriever:
    """A Retriever over PromptReps representations; `variant` is 'dense', 'sparse' or 'hybrid'.
    Documents are cut to `doc_max_tokens` LM tokens, queries to `query_max_tokens`; hybrid fuses
    each side's top `max(k, fusion_depth)`."""

    def __init__(self, encoder: PromptRepsEncoder, variant: str = "hybrid",
                 doc_max_tokens: int = 256, query_max_tokens: int = 64, part_size: int = 256,
                 fusion_depth: int = 100, cache: bool = True, name: str | None = None) -> None:
        check_choice("PromptRepsRetriever.variant", variant, VARIANTS)
        if min(doc_max_tokens, query_max_tokens, part_size) < 1:
            raise ValueError("doc_max_tokens, query_max_tokens and part_size must be >= 1, got "
                             f"{doc_max_tokens}, {query_max_tokens}, {part_size}")
        self.encoder, self.variant = encoder, variant
        self.doc_max_tokens, self.query_max_tokens = doc_max_tokens, query_max_tokens
        self.part_size, self.fusion_depth, self.cache = part_size, fusion_depth, cache
        self.name = name or f"promptreps-{encoder.name}-{variant}"
        self.timings: dict[str, float] = {}
        self._stats: dict[str, Any] = {}

    def cache_dir(self, collection: Collection) -> Path:
        key = (f"{self.encoder.fingerprint()}-{ids_checksum(list(collection.doc_ids))[:16]}"
               f"-d{self.doc_max_tokens}")
        return cache_root() / "promptreps" / key

    def encode_corpus(self, collection: Collection) -> Encoded:
        """Every document's representations (corpus order), from the cache where encoded."""
        texts = [d.contents for d in collection.documents]
        prompts = self.encoder.prompt_ids(texts, "passage", self.doc_max_tokens)
        order = np.argsort([-len(p) for p in prompts], kind="stable")
        directory = self.cache_dir(collection)
        dense = np.zeros((len(texts), self.encoder.model.config.hidden_size), np.float32)
        tokens = np.zeros(len(texts), np.int64)
        parts, encoded_docs, encode_s = [], 0, 0.0
        for number, start in enumerate(range(0, len(texts), self.part_size)):
            rows = order[start:start + self.part_size]
            path = directory / f"part-{number:05d}.npz"
            part = _read_part(path, rows, self.encoder.num_words) if self.cache else None
            if part is None:
                began = time.perf_counter()
                part = self.encoder.encode_ids([prompts[i] for i in rows])
                encode_s += time.perf_counter() - began
                encoded_docs += len(rows)
                if self.cache:
                    _write_part(path, rows, part)
                log.info("%s: encoded %d/%d documents (%.2f docs/s)", self.name,
                         start + len(rows), len(texts), encoded_docs / max(encode_s, 1e-9))
            dense[rows], tokens[rows] = part.dense, part.tokens
            parts.append((rows, part.sparse))
        sparse = sp.vstack([m for _, m in parts], format="csr") if parts else sp.csr_matrix(
            (0, self.encoder.num_words), dtype=np.float32)
        sparse = sparse[np.argsort(np.concatenate([r for r, _ in parts]))] if parts else sparse
        if encoded_docs:
            self.timings["encode_docs_per_s"] = encoded_docs / max(encode_s, 1e-9)
        self.timings["corpus_lm_tokens_per_doc"] = float(tokens.mean()) if len(tokens) else 0.0
        return Encoded(dense, sparse.tocsr(), tokens)

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        start = time.perf_counter()
        corpus = self.encode_corpus(collection)
        self.timings["encode_corpus_s"] = time.perf_counter() - start
        doc_ids = list(collection.doc_ids)
        depth = min(max(k, self.fusion_depth if self.variant == "hybrid" else k), len(doc_ids))
        start = time.perf_counter()
        dense_index = sparse_index = None
        if self.variant != "sparse":
            dense_index = create_index("exact").build(normalise_rows(corpus.dense), doc_ids)
        if self.variant != "dense":
            sparse_index = sparse_index_class("exact")().build(corpus.sparse, doc_ids)
        self.timings["index_build_s"] = time.perf_counter() - start
        ids, texts = list(queries), list(queries.values())
        prompts = self.encoder.prompt_ids(texts, "query", self.query_max_tokens)
        self.encoder.encode_ids(prompts)  # compiles every bucket: the timed pass is steady state
        start = time.perf_counter()
        encoded = self.encoder.encode_ids(prompts)
        query_s = time.perf_counter() - start
        start = time.perf_counter()
        dense_run = sparse_run = None
        if dense_index is not None:
            dense_run = dense_index.search(normalise_rows(encoded.dense), depth).to_run(ids)
        if sparse_index is not None:
            sparse_run = sparse_index.search(encoded.sparse, depth).to_run(ids)
        if self.variant == "hybrid":
            run = {q: hybrid_fusion(dense_run[q], sparse_run[q], k) for q in ids}
        else:
            run = dense_run if self.variant == "dense" else sparse_run
            run = {q: dict(list(docs.items())[:k]) for q, docs in run.items()}
        search_s = time.perf_counter() - start
        n = max(len(ids), 1)
        config = self.encoder.model.config
        self.timings.update(
            encode_queries_s=query_s, search_s=search_s,
            query_encoding_ms_per_query=1000 * query_s / n,
            query_lm_tokens_per_query=float(encoded.tokens.sum()) / n,
            query_gflops_per_query=sum(decoder_forward_flops(config, int(t), 0, 1)
                                         for t in encoded.tokens)
            / n / 1e9,
            search_ms_per_query=1000 * search_s / n)
        bytes_per_doc = 0.0
        if dense_index is not None:
            bytes_per_doc += 4 * config.hidden_size
        if sparse_index is not None:
            bytes_per_doc += sparse_index.bytes_per_doc
        self._stats = {
            "bytes_per_doc": round(bytes_per_doc, 1), "variant": self.variant,
            "lm": self.encoder.name, "doc_max_tokens": self.doc_max_tokens,
            "query_max_tokens": self.query_max_tokens, "sparse_top_k": self.encoder.top_k,
            "postings_per_doc": round(corpus.sparse.nnz / max(len(doc_ids), 1), 1),
            "postings_per_query": round(encoded.sparse.nnz / n, 1),
        }
        log.info("%s: %s %s", self.name, self.timings, self._stats)
        return run

    def index_stats(self) -> dict[str, Any]:
        """Index size and settings for metrics.json (evaluate_on_collection)."""
        return dict(self._stats)


def promptreps_retriever(lm: str = "smollm2-135m-instruct", variant: str = "hybrid",
                         doc_max_tokens: int = 256, query_max_tokens: int = 64,
                         top_k: int = 128, batch_size: int = 16,
                         name: str | None = None) -> PromptRepsRetriever:
    """A PromptRepsRetriever over a fetched GGUF model (`lm`: a name under $IRJAX_WEIGHTS_DIR,
    see irjax/models/weights_dir.py, or a .gguf path)."""
    from irjax.models.weights_dir import gguf_path

    check_choice("promptreps_retriever.variant", variant, VARIANTS)
    path = Path(lm) if lm.endswith(".gguf") else gguf_path(lm)
    encoder = PromptRepsEncoder.from_gguf(path, top_k=top_k, batch_size=batch_size)
    if lm.endswith(".gguf"):
        encoder.name = path.stem
    return PromptRepsRetriever(encoder, variant, doc_max_tokens, query_max_tokens, name=name)
