"""Learned sparse retrieval: SPLADE documents (and queries) as vocabulary-sized term vectors,
searched through a sparse index (exact CSR scorer or Seismic).

Two query sides: 'splade' runs the same encoder on the query (SPLADE v2); 'idf' is the
inference-free one (Geng et al. 2024; OpenSearch's inference-free sparse models): the query's
WordPiece ids, each weighted by its IDF on the indexed corpus, no model at all, so query encoding
costs a tokenizer call. Timings (corpus encoding, index build, query encoding, search) and the
index's stored size per document land in metrics.json.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from irjax.data.batching import length_buckets
from irjax.data.collection import Collection
from irjax.data.runs import Run
from irjax.data.tokenization import WordPieceTokenizer, pad_sequences
from irjax.files import cache_root
from irjax.index.base import ids_checksum
from irjax.choices import check_choice
from irjax.index.sparse import SPARSE_INDEXES, SparseIndex, sparse_index_class
from irjax.models.splade import SpladeEncoder
from irjax.models.splade_training import QUERY_SIDES
from irjax.parallel.fingerprint import params_digest

log = logging.getLogger(__name__)


def corpus_idf(tokenizer: WordPieceTokenizer, texts: Sequence[str], max_length: int) -> np.ndarray:
    """BM25's IDF per vocabulary id, log(1 + (N - df + 0.5) / (df + 0.5)), with df counted over
    the documents' WordPiece ids (each id once per document; [CLS]/[SEP] excluded). Always > 0,
    so a query term the corpus never uses still counts (a document may have it as an expansion)."""
    df = np.zeros(tokenizer.vocab_size, np.int64)
    for ids in tokenizer.tokenize(list(texts), max_length):
        df[np.unique(ids[1:-1])] += 1
    n = len(texts)
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


def idf_queries(tokenizer: WordPieceTokenizer, texts: Sequence[str], idf: np.ndarray,
                max_length: int) -> sp.csr_matrix:
    """Inference-free query vectors: each distinct WordPiece id of the query weighted by its IDF."""
    rows, cols = [], []
    for i, ids in enumerate(tokenizer.tokenize(list(texts), max_length)):
        unique = np.unique(ids[1:-1])
        rows.append(np.full(unique.size, i))
        cols.append(unique)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csr_matrix((idf[c], (r, c)), shape=(len(texts), idf.shape[0]), dtype=np.float32)


class SpladeTextEncoder:
    """Texts -> CSR SPLADE vectors, in length buckets with one jitted function per shape."""

    def __init__(self, module: SpladeEncoder, params: Any, tokenizer: WordPieceTokenizer,
                 max_length: int, batch_size: int = 32) -> None:
        self.module, self.params, self.tokenizer = module, params, tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self._apply: Callable[..., jax.Array] = jax.jit(
            lambda p, ids, mask: module.apply({"params": p}, ids, mask))

    def encode(self, texts: Sequence[str]) -> sp.csr_matrix:
        tokens = self.tokenizer.tokenize(list(texts), self.max_length)
        buckets = length_buckets([len(t) for t in tokens], self.batch_size, 32, self.max_length)
        outputs = []
        for bucket in buckets:
            batch = pad_sequences([tokens[i] for i in bucket.indices], self.tokenizer.pad_id,
                                  pad_to=bucket.length, rows=self.batch_size)
            dense = np.asarray(self._apply(self.params, jnp.asarray(batch.ids), jnp.asarray(batch.mask)))
            outputs.append(sp.csr_matrix(dense[: len(bucket)]))
        order = np.argsort(np.concatenate([b.indices for b in buckets]))
        return sp.vstack(outputs, format="csr")[order] if outputs else sp.csr_matrix(
            (0, self.tokenizer.vocab_size), dtype=np.float32)


class SpladeRetriever:
    """Encodes the corpus with a SPLADE encoder, indexes it (`index`: 'exact' or 'seismic' with
    `index_options`), and answers queries with SPLADE (`query_side='splade'`) or IDF weights
    (`query_side='idf'`, inference-free). Implements the Retriever contract."""

    def __init__(self, encoder: SpladeEncoder, params: Any, tokenizer: WordPieceTokenizer,
                 name: str, query_side: str = "splade", index: str = "exact",
                 index_options: dict[str, Any] | None = None, doc_max_length: int = 256,
                 query_max_length: int = 64, batch_size: int = 32,
                 cache: bool = True) -> None:
        if query_side not in QUERY_SIDES:
            raise ValueError(f"query_side must be one of {QUERY_SIDES}, got {query_side!r}")
        self.name, self.query_side, self.tokenizer = name, query_side, tokenizer
        self.index_kind, self.index_options = index, dict(index_options or {})
        sparse_index_class(index)  # an unknown kind fails here, before any encoding
        self.query_max_length = query_max_length
        self.doc_encoder = SpladeTextEncoder(encoder, params, tokenizer, doc_max_length, batch_size)
        self.timings: dict[str, float] = {}
        self._index_stats: dict[str, Any] = {}
        self.index: SparseIndex | None = None
        self.idf: np.ndarray | None = None
        self.cache = cache

    def encode_corpus(self, collection: Collection) -> sp.csr_matrix:
        """The corpus's SPLADE vectors, kept under $IRJAX_CACHE_DIR/splade_corpus/ keyed by the
        parameters, the document ids and the length: zero-shot runs with either query side
        (and reruns) share one encoding, the slow part of a run on CPU."""
        texts = [d.contents for d in collection.documents]
        if not self.cache:
            return self.doc_encoder.encode(texts)
        key = params_digest(self.doc_encoder.params)[:16] + "-" + ids_checksum(
            list(collection.doc_ids))[:16] + f"-{self.doc_encoder.max_length}"
        path = cache_root() / "splade_corpus" / f"{key}.npz"
        if path.is_file():
            try:
                docs = sp.load_npz(path).tocsr()
                if docs.shape == (len(texts), self.tokenizer.vocab_size):
                    log.info("corpus vectors from %s", path)
                    return docs
            except (OSError, ValueError) as e:
                log.warning("ignoring unreadable corpus cache %s (%s)", path, e)
        docs = self.doc_encoder.encode(texts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
        sp.save_npz(tmp, docs, compressed=False)
        os.replace(tmp, path)
        return docs

    def encode_queries(self, texts: Sequence[str]) -> sp.csr_matrix:
        if self.query_side == "idf":
            assert self.idf is not None, "index a corpus first: the IDF comes from it"
            return idf_queries(self.tokenizer, texts, self.idf, self.query_max_length)
        encoder = SpladeTextEncoder(self.doc_encoder.module, self.doc_encoder.params,
                                    self.tokenizer, self.query_max_length, self.doc_encoder.batch_size)
        return encoder.encode(texts)

    def build(self, collection: Collection) -> None:
        texts = [d.contents for d in collection.documents]
        start = time.perf_counter()
        docs = self.encode_corpus(collection)
        self.timings["corpus_encoding_s"] = time.perf_counter() - start
        if self.query_side == "idf":
            self.idf = corpus_idf(self.tokenizer, texts, self.doc_encoder.max_length)
        start = time.perf_counter()
        self.index = sparse_index_class(self.index_kind)(**self.index_options)
        self.index.build(docs, list(collection.doc_ids))
        self.timings["index_build_s"] = time.perf_counter() - start

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        self.build(collection)
        assert self.index is not None
        ids = list(queries)
        texts = [queries[q] for q in ids]
        self.encode_queries(texts)  # compiles every bucket shape: the timed pass is steady state
        start = time.perf_counter()
        vectors = self.encode_queries(texts)
        query_s = time.perf_counter() - start
        start = time.perf_counter()
        result = self.index.search(vectors, k)
        search_s = time.perf_counter() - start
        self.timings.update(query_encoding_s=query_s, search_s=search_s)
        self._index_stats = {
            "bytes_per_doc": round(self.index.bytes_per_doc, 1),
            "postings_per_doc": round(self.index.postings_per_doc, 1),
            "postings_per_query": round(vectors.nnz / max(len(ids), 1), 1),
            "query_encoding_ms_per_query": round(1000 * query_s / max(len(ids), 1), 4),
            "search_ms_per_query": round(1000 * search_s / max(len(ids), 1), 4),
            "index": self.index_kind, "index_options": self.index.options(),
            "query_side": self.query_side,
        }
        log.info("%s: %s", self.name, self._index_stats)
        return result.to_run(ids)

    def index_stats(self) -> dict[str, Any]:
        """The last search's index size and costs, for metrics.json (evaluate_on_collection)."""
        return dict(self._index_stats)


def pretrained_splade_retriever(weights: str = "splade-tiny", query_side: str = "splade",
                                index: str = "exact", index_options: dict[str, Any] | None = None,
                                doc_max_length: int = 256, query_max_length: int = 64,
                                batch_size: int = 32, name: str | None = None) -> SpladeRetriever:
    """A SpladeRetriever over a BertForMaskedLM checkpoint: `weights` is a folder, or a name under
    $IRJAX_WEIGHTS_DIR (irjax/models/splade_import.py; `tools/fetch_weights.py` installs it)."""
    from irjax.models.splade_import import find_weights, load_splade_params

    check_choice("splade_retriever.query_side", query_side, QUERY_SIDES)
    check_choice("splade_retriever.index", index, SPARSE_INDEXES)
    directory = find_weights(weights)
    config, params = load_splade_params(directory)
    return SpladeRetriever(SpladeEncoder(config), params, WordPieceTokenizer(directory),
                           name or f"{directory.name}-{query_side}", query_side, index,
                           index_options, doc_max_length, query_max_length, batch_size)
