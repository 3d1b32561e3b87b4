"""PromptRepsRetriever on the six-document collection with a tiny random LM: the sparse run
equals brute-force dot products of the encoder's own vectors (inverted index = exact), the dense
run brute-force cosine, the hybrid run the fusion of the two; the corpus cache is reused, and a
hand-computed example pins the min-max fusion."""
from __future__ import annotations

import numpy as np
import pytest

from irjax.data.collection import load_collection
from irjax.retrieval.promptreps import PromptRepsRetriever, hybrid_fusion, normalise_rows
from tests.decoding.test_prompt_representations import encoder
from tests.helpers.tiny_collection import write_collection


def test_hybrid_fusion_by_hand():
    dense = {"a": 0.9, "b": 0.5, "c": 0.1}      # -> a 1, b 0.5, c 0
    sparse = {"b": 4.0, "d": 2.0, "a": 1.0}     # -> b 1, d 1/3, a 0
    fused = hybrid_fusion(dense, sparse, k=10)
    assert list(fused) == ["b", "a", "d", "c"]
    assert fused == pytest.approx({"b": 1.5, "a": 1.0, "d": 1 / 3, "c": 0.0})
    assert list(hybrid_fusion(dense, sparse, k=2)) == ["b", "a"]
    assert hybrid_fusion({"x": 3.0}, {}, k=5) == {"x": 1.0}  # one equal-score list: 1 each


def brute_force(scores: np.ndarray, doc_ids: list[str], k: int, positive: bool) -> dict:
    order = np.lexsort((np.arange(len(scores)), -scores))
    keep = [i for i in order if scores[i] > 0 or not positive][:k]
    return {doc_ids[i]: float(scores[i]) for i in keep}


@pytest.fixture
def collection(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    return load_collection(write_collection(tmp_path / "tiny"), "test")


def test_runs_equal_brute_force_and_the_corpus_is_encoded_once(collection):
    lm = encoder(top_k=4, batch_size=4)
    doc_ids = list(collection.doc_ids)
    queries = collection.eval_queries()
    docs = lm.encode([d.contents for d in collection.documents], "passage", 40)
    qs = lm.encode(list(queries.values()), "query", 16)
    runs = {}
    for variant in ("sparse", "dense", "hybrid"):
        retriever = PromptRepsRetriever(lm, variant, doc_max_tokens=40, query_max_tokens=16,
                                        part_size=4, fusion_depth=6)
        runs[variant] = retriever.retrieve(collection, queries, k=3)
        encoded_now = "encode_docs_per_s" in retriever.timings
        assert encoded_now == (variant == "sparse")  # the later variants read the cache
        assert retriever.timings["query_lm_tokens_per_query"] == qs.tokens.mean()
        stats = retriever.index_stats()
        assert stats["variant"] == variant and stats["bytes_per_doc"] > 0
    sparse_scores = (qs.sparse @ docs.sparse.T).toarray()
    dense_scores = normalise_rows(qs.dense) @ normalise_rows(docs.dense).T
    assert sparse_scores.max() > 0
    for row, qid in enumerate(queries):
        for variant, scores, positive in (("sparse", sparse_scores, True),
                                          ("dense", dense_scores, False)):
            expected = brute_force(scores[row], doc_ids, 3, positive)
            assert list(runs[variant][qid]) == list(expected)
            assert runs[variant][qid] == pytest.approx(expected, rel=1e-5, abs=1e-6)
        fused = hybrid_fusion(brute_force(dense_scores[row], doc_ids, 6, False),
                              brute_force(sparse_scores[row], doc_ids, 6, True), 3)
        assert list(runs["hybrid"][qid]) == list(fused)
        assert runs["hybrid"][qid] == pytest.approx(fused, abs=1e-5)
    parts = sorted(p.name for p in retriever.cache_dir(collection).iterdir())
    assert parts == ["part-00000.npz", "part-00001.npz"]  # 6 documents, parts of 4


def test_a_damaged_cache_part_is_re_encoded(collection):
    lm = encoder(top_k=4, batch_size=4)
    retriever = PromptRepsRetriever(lm, "dense", doc_max_tokens=40, part_size=4)
    first = retriever.encode_corpus(collection)
    part = retriever.cache_dir(collection) / "part-00001.npz"
    part.write_bytes(b"not an npz")
    again = PromptRepsRetriever(lm, "dense", doc_max_tokens=40, part_size=4)
    second = again.encode_corpus(collection)
    np.testing.assert_array_equal(first.dense, second.dense)
    assert (first.sparse != second.sparse).nnz == 0
    assert again.timings["encode_docs_per_s"] > 0
    assert any(".corrupt-" in p.name for p in part.parent.iterdir())
