"""BM25 baseline on bm25s: the sparse reference every dense model is compared against.

Defaults follow the Anserini/Pyserini BEIR baselines that published BM25 numbers come from:
Lucene's BM25 variant with k1=0.9, b=0.4, English Snowball stemming (PyStemmer) and English
stopwords. Tokenisation is bm25s' own (lower-cased `\\w\\w+` words, stopwords dropped, then stemmed).

Like Lucene, a query returns only documents that contain at least one of its terms, so a run never
gets padded with arbitrary zero-score documents. Top-k selection is done here rather than in bm25s
so that ties are broken deterministically, in the same trec_eval order as everywhere else in irjax.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Sequence

import bm25s
import numpy as np
import Stemmer

from irjax.data.collection import Collection
from irjax.data.runs import Run, rank_documents
from irjax.parallel.processes import allgather_json, process_shard

log = logging.getLogger(__name__)

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


class BM25Retriever:
    """Indexes a corpus once, then answers batches of queries with a Run (top-k per query)."""

    def __init__(
        self,
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        stemmer_language: str | None = "english",
        stopwords: str | Sequence[str] | None = "en",
    ):
        if method not in METHODS:
            raise ValueError(f"unknown BM25 method {method!r}; choose one of {METHODS}")
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1 = k1
        self.b = b
        self.method = method
        self.stemmer_language = stemmer_language
        self.stopwords = list(stopwords) if stopwords is not None and not isinstance(stopwords, str) else stopwords
        try:
            self._stemmer = Stemmer.Stemmer(stemmer_language) if stemmer_language else None
        except KeyError:
            raise ValueError(f"PyStemmer has no stemmer for {stemmer_language!r}; "
                             f"available: {Stemmer.algorithms()}") from None
        self._tokenizer: bm25s.tokenization.Tokenizer | None = None
        self._bm25: bm25s.BM25 | None = None
        self.doc_ids: list[str] = []
        self.num_empty_documents = 0  # documents with no indexable token: they can never be retrieved
        self.last_empty_query_ids: list[str] = []  # queries of the last search with no indexed token

    def _new_tokenizer(self) -> bm25s.tokenization.Tokenizer:
        return bm25s.tokenization.Tokenizer(lower=True, stopwords=self.stopwords or None, stemmer=self._stemmer)

    def index(self, doc_ids: Sequence[str], texts: Sequence[str]) -> None:
        """Builds the index; a document's text should be its "title text" contents."""
        if len(doc_ids) != len(texts):
            raise ValueError(f"got {len(doc_ids)} doc ids but {len(texts)} texts")
        if not doc_ids:
            raise ValueError("cannot index an empty corpus")
        ids = [str(d) for d in doc_ids]
        if len(set(ids)) != len(ids):
            dupes = sorted(d for d, count in Counter(ids).items() if count > 1)
            raise ValueError(f"duplicate doc ids in the corpus, e.g. {dupes[:5]}")
        tokenizer = self._new_tokenizer()
        corpus_tokens = tokenizer.tokenize(list(texts), update_vocab=True, return_as="tuple",
                                           show_progress=False, allow_empty=False)
        if not corpus_tokens.vocab:
            raise ValueError("no document has an indexable token (all empty or stopwords)")
        bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=self.method, backend="numpy")
        bm25.index(corpus_tokens, create_empty_token=False, show_progress=False)
        self._tokenizer, self._bm25, self.doc_ids = tokenizer, bm25, ids
        self.num_empty_documents = sum(1 for tokens in corpus_tokens.ids if not tokens)
        if self.num_empty_documents:
            log.warning("%d of %d documents have no indexable token", self.num_empty_documents, len(ids))

    @property
    def vocabulary_size(self) -> int:
        return 0 if self._tokenizer is None else len(self._tokenizer.get_vocab_dict())

    def _matching(self, token_ids: list[int]) -> np.ndarray:
        """Indices of documents containing at least one of the (vocabulary) token ids."""
        assert self._bm25 is not None
        indptr, indices = self._bm25.scores["indptr"], self._bm25.scores["indices"]
        parts = [indices[indptr[t]:indptr[t + 1]] for t in set(token_ids)]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)

    def _top_k(self, token_ids: list[int], k: int) -> dict[str, float]:
        """The k best matching documents, ties (also at the cut-off) broken by doc id like trec_eval."""
        assert self._bm25 is not None
        candidates = self._matching(token_ids)
        if candidates.size == 0:
            return {}
        scores = self._bm25.get_scores_from_ids(token_ids)[candidates]
        if candidates.size > k:
            # Keep everything scoring at least the k-th best, so ties at the cut-off are all seen.
            threshold = np.partition(scores, candidates.size - k)[candidates.size - k]
            keep = scores >= threshold
            candidates, scores = candidates[keep], scores[keep]
        ranked = rank_documents({self.doc_ids[i]: float(s) for i, s in zip(candidates.tolist(), scores.tolist())})
        return dict(ranked[:k])

    def search(self, query_ids: Sequence[str], query_texts: Sequence[str], k: int = 100) -> Run:
        """Top-k per query (k clamped to the corpus size).

        A query without any indexed token (e.g. only stopwords or unseen words) gets an empty
        ranking instead of an error; such queries are listed in `last_empty_query_ids`.
        """
        if self._bm25 is None or self._tokenizer is None:
            raise RuntimeError("BM25Retriever.search called before index()")
        if len(query_ids) != len(query_texts):
            raise ValueError(f"got {len(query_ids)} query ids but {len(query_texts)} query texts")
        qids = [str(q) for q in query_ids]
        if len(set(qids)) != len(qids):
            raise ValueError("duplicate query ids in search()")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        k = min(k, len(self.doc_ids))
        # update_vocab=False: unseen words are dropped, unseen forms of indexed stems are kept.
        query_tokens = self._tokenizer.tokenize(list(query_texts), update_vocab=False, return_as="ids",
                                                show_progress=False, allow_empty=False)
        run: Run = {}
        empty: list[str] = []
        for qid, token_ids in zip(qids, query_tokens):
            if not token_ids:
                empty.append(qid)
                run[qid] = {}
                continue
            run[qid] = self._top_k(token_ids, k)
        self.last_empty_query_ids = empty
        if empty:
            log.warning("%d of %d queries have no indexed token and retrieve nothing, e.g. %s",
                        len(empty), len(qids), empty[:5])
        return run


class SparseRetriever:
    """BM25 over document contents (title + text). With several processes every process indexes
    the corpus (cheap next to encoding) and searches its share of the queries; the runs are
    gathered, so each process returns the whole run."""

    def __init__(self, bm25: BM25Retriever | None = None, name: str = "bm25"):
        self.bm25 = bm25 or BM25Retriever()
        self.name = name
        self.timings: dict[str, float] = {}

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        start = time.perf_counter()
        self.bm25.index(list(collection.doc_ids), [d.contents for d in collection.documents])
        self.timings["index_s"] = time.perf_counter() - start
        start = time.perf_counter()
        share = process_shard(len(queries))
        ids = list(queries)[share]
        run = self.bm25.search(ids, [queries[q] for q in ids], k=k)
        gathered: Run = {}
        for part in allgather_json(run):
            gathered.update(part)
        self.timings["search_s"] = time.perf_counter() - start
        return {qid: gathered[qid] for qid in queries}
