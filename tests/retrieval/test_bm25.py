"""BM25Retriever: Lucene scoring with the configured k1/b, stemming and stopwords, graceful empty
queries, deterministic top-k, and published-level effectiveness on the real SciFact test split."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from irjax.retrieval.bm25 import BM25Retriever
from irjax.evaluation.metrics import evaluate_run

DOCS = {
    "d1": "The cat runs home",
    "d2": "Dogs are running in the park and the dogs bark",
    "d3": "A quiet park",
    "d4": "",  # nothing indexable
    "d5": "the of and",  # only stopwords
}


@pytest.fixture(scope="module")
def retriever() -> BM25Retriever:
    bm25 = BM25Retriever()
    bm25.index(list(DOCS), list(DOCS.values()))
    return bm25


def _lucene_bm25(tf: int, df: int, n_docs: int, doc_len: int, avg_len: float, k1: float, b: float) -> float:
    """Reference Lucene (>= 8) BM25 term weight, to check that bm25s receives our k1 and b.

    Lucene 8 dropped the constant (k1 + 1) factor from the numerator; rankings are unchanged."""
    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * doc_len / avg_len))


def test_scores_follow_lucene_bm25_with_configured_parameters(retriever: BM25Retriever) -> None:
    run = retriever.search(["q"], ["park"], k=10)["q"]
    assert set(run) == {"d2", "d3"}  # only documents containing a query term
    # Indexed lengths: d1 [cat run home], d2 [dog run park dog bark], d3 [quiet park] ("a" is too
    # short for bm25s' \w\w+ words), d4 and d5 nothing.
    lengths = {"d1": 3, "d2": 5, "d3": 2, "d4": 0, "d5": 0}
    avg = sum(lengths.values()) / len(lengths)
    for doc_id in ("d2", "d3"):
        expected = _lucene_bm25(1, 2, 5, lengths[doc_id], avg, k1=0.9, b=0.4)
        assert run[doc_id] == pytest.approx(expected, rel=1e-5)
    assert run["d3"] > run["d2"]  # the shorter document wins at equal tf


def test_length_normalisation_follows_b() -> None:
    flat = BM25Retriever(b=0.0)
    flat.index(["short", "long"], ["apple", "apple pear plum fig kiwi lime"])
    scores = flat.search(["q"], ["apple"])["q"]
    assert scores["short"] == pytest.approx(scores["long"])


def test_stemming_and_stopwords(retriever: BM25Retriever) -> None:
    # "running" and "run" share the stem of "runs"/"running"; "dog" matches "Dogs".
    run = retriever.search(["a", "b"], ["run", "dog"], k=10)
    assert set(run["a"]) == {"d1", "d2"}
    assert set(run["b"]) == {"d2"}
    unstemmed = BM25Retriever(stemmer_language=None)
    unstemmed.index(list(DOCS), list(DOCS.values()))
    assert set(unstemmed.search(["a"], ["run"])["a"]) == set()
    assert unstemmed.last_empty_query_ids == ["a"]
    with_stopwords = BM25Retriever(stopwords=None)
    with_stopwords.index(list(DOCS), list(DOCS.values()))
    assert set(with_stopwords.search(["s"], ["the"])["s"]) == {"d1", "d2", "d5"}


def test_queries_without_indexed_tokens_return_empty_rankings(retriever: BM25Retriever) -> None:
    run = retriever.search(["stop", "unseen", "ok", "blank"], ["the and of", "zyzzyva", "cat", ""], k=5)
    assert run == {"stop": {}, "unseen": {}, "ok": run["ok"], "blank": {}}
    assert list(run["ok"]) == ["d1"]
    assert retriever.last_empty_query_ids == ["stop", "unseen", "blank"]
    assert retriever.num_empty_documents == 2
    retriever.search(["ok"], ["cat"])
    assert retriever.last_empty_query_ids == []  # the count belongs to the last search only


def test_k_clamps_to_corpus_and_ties_are_deterministic() -> None:
    bm25 = BM25Retriever()
    bm25.index(["b", "a", "c", "z"], ["apple pie", "apple pie", "apple pie", "pear"])
    full = bm25.search(["q"], ["apple"], k=1000)["q"]
    assert list(full) == ["c", "b", "a"]  # equal scores: descending doc id, like trec_eval
    assert len(set(full.values())) == 1
    assert bm25.search(["q"], ["apple"], k=1)["q"] == {"c": full["c"]}
    ranked = bm25.search(["q"], ["apple pear"], k=2)["q"]
    assert list(ranked) == ["z", "c"]  # rarer term scores higher; then the tie cut at k=2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: r.index(["a", "a"], ["x", "y"]), "duplicate doc ids"),
        (lambda r: r.index(["a"], ["x", "y"]), "1 doc ids but 2 texts"),
        (lambda r: r.index([], []), "empty corpus"),
        (lambda r: r.index(["a"], ["the of"]), "no document has an indexable token"),
        (lambda r: r.search(["q"], ["x"]), "before index"),
    ],
)
def test_bad_input_is_rejected(call, message: str) -> None:
    with pytest.raises((ValueError, RuntimeError), match=message):
        call(BM25Retriever())


def test_bad_parameters_and_search_arguments(retriever: BM25Retriever) -> None:
    with pytest.raises(ValueError, match="unknown BM25 method"):
        BM25Retriever(method="bm42")
    with pytest.raises(ValueError, match="PyStemmer has no stemmer"):
        BM25Retriever(stemmer_language="klingon")
    with pytest.raises(ValueError, match="0 <= b <= 1"):
        BM25Retriever(b=1.5)
    with pytest.raises(ValueError, match="k must be at least 1"):
        retriever.search(["q"], ["cat"], k=0)
    with pytest.raises(ValueError, match="duplicate query ids"):
        retriever.search(["q", "q"], ["cat", "dog"])


def _read_beir(root: Path, split: str) -> tuple[list[str], list[str], dict[str, str], dict[str, dict[str, int]]]:
    """A minimal BEIR reader, so this test does not depend on irjax.data."""
    doc_ids, texts = [], []
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            doc_ids.append(doc["_id"])
            texts.append(f"{doc['title']} {doc['text']}" if doc.get("title") else doc["text"])
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        queries = {q["_id"]: q["text"] for q in map(json.loads, f)}
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, doc_id, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[doc_id] = int(score)
    return doc_ids, texts, queries, qrels


def test_scifact_test_matches_published_bm25(shared_data: Path) -> None:
    doc_ids, texts, queries, qrels = _read_beir(shared_data / "scifact", "test")
    bm25 = BM25Retriever()
    bm25.index(doc_ids, texts)
    qids = sorted(qrels)
    run = bm25.search(qids, [queries[q] for q in qids], k=100)
    result = evaluate_run(run, qrels)
    assert result.num_judged == 300 and result.num_with_results == 300
    # Only matching documents are returned, so a short query may get fewer than k.
    assert all(0 < len(docs) <= 100 for docs in run.values())
    assert sum(len(docs) == 100 for docs in run.values()) > 250
    # Published BM25 (Anserini / BEIR) on SciFact test: nDCG@10 0.665-0.679.
    assert 0.655 <= result.aggregate["nDCG@10"] <= 0.690, result.aggregate
    assert result.aggregate["R@100"] > result.aggregate["R@10"] > result.aggregate["nDCG@10"] * 0.9
