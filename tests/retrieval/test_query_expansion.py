"""QueryExpansionRetriever (HyDE, GenQREnsemble): the dense query vector is the mean of the
encoder's vectors of the query and its texts; the BM25 query string is the query repeated then
the texts; end to end with a tiny random LM on the tiny collection, costs in metrics.json."""
from __future__ import annotations

import json
from typing import Mapping

import numpy as np
import pytest

from irjax.data.collection import load_collection
from irjax.decoding.lm_query_generation import SamplingConfig
from irjax.decoding.lm_rewriter import LMRewriter
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.models.decoder_lm import DecoderLM
from irjax.models.lm_import import config_from_hf, convert_state_dict
from irjax.retrieval.bm25 import SparseRetriever
from irjax.retrieval.dense import DenseRetriever
from irjax.retrieval.query_expansion import (QueryExpansionRetriever, expanded_query_text,
                                             mean_vectors)
from tests.helpers.char_tokenizer import SPECIAL, VOCAB_SIZE, char_tokenizer
from tests.helpers.tiny_collection import write_collection
from tests.helpers.tiny_lm import LLAMA, random_checkpoint


class FakeRewriter:
    """Deterministic texts per (template, query); the last query gets none."""
    name = "fake"

    def __init__(self, n: int = 2):
        self.n, self.costs = n, {}

    def rewrite(self, template: str, queries: Mapping[str, str]) -> dict[str, list[str]]:
        self.costs = {"lm_tokens": 10.0 * len(queries)}
        last = list(queries)[-1]
        return {qid: [] if qid == last else
                [f"{template[:2]} {text} passage {i}" for i in range(self.n)]
                for qid, text in queries.items()}


class SpyBM25(SparseRetriever):
    def retrieve(self, collection, queries, k):  # noqa: ANN001
        self.seen = dict(queries)
        return super().retrieve(collection, queries, k)


def test_bm25_query_string_is_the_query_repeated_then_the_texts(tmp_path):
    assert expanded_query_text("heat  flux", ["a\nb", " ", "c"], 3) == \
        "heat flux heat flux heat flux a b c"
    assert expanded_query_text("q", [], 1) == "q"
    with pytest.raises(ValueError, match="query_repeats=0"):
        expanded_query_text("q", ["x"], 0)
    collection = load_collection(write_collection(tmp_path / "c"), "test")
    bm25 = SpyBM25()
    retriever = QueryExpansionRetriever(bm25, FakeRewriter(), ["T1 {query}", "T2 {query}"],
                                        query_repeats=2)
    run = retriever.retrieve(collection, collection.eval_queries(), k=3)
    assert bm25.seen == {
        "q5": "instrument with a bow instrument with a bow T1 instrument with a bow passage 0 "
              "T1 instrument with a bow passage 1 T2 instrument with a bow passage 0 "
              "T2 instrument with a bow passage 1",
        "q6": "how plants make sugar how plants make sugar"}
    assert set(run) == {"q5", "q6"} and retriever.timings["lm_tokens_per_query"] == 20.0
    assert retriever.timings["texts_per_query"] == 2.0


def test_mean_vectors_keeps_a_query_without_texts():
    q = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    got = mean_vectors(q, [np.array([[0.0, 1.0], [0.0, 3.0]]), np.zeros((0, 2))])
    np.testing.assert_allclose(got, [[1 / 3, 4 / 3], [0.0, 2.0]])


def test_dense_hyde_vector_is_the_mean_of_the_encoder_vectors(tmp_path):
    from irjax.models.dual_encoder import TextEncoder
    from irjax.models.pretrained import find_minilm_dir
    try:
        find_minilm_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    encoder = TextEncoder.from_pretrained(max_length=64, batch_size=8)
    collection = load_collection(write_collection(tmp_path / "c"), "test")
    dense = DenseRetriever(encoder, index="exact", cache_dir=str(tmp_path / "emb"))
    rewriter = FakeRewriter(n=3)
    retriever = QueryExpansionRetriever(dense, rewriter, ["HyDE {query}"], side="document")
    run = retriever.retrieve(collection, collection.eval_queries(), k=6)
    corpus = encoder.encode([d.contents for d in collection.documents])
    for qid, text in collection.eval_queries().items():
        texts = retriever.expansions[qid]
        expected = encoder.encode([text] + texts).mean(0)  # the query alone when no texts
        assert len(texts) == (0 if qid == "q6" else 3)
        scores = corpus @ expected
        for doc, score in run[qid].items():
            assert score == pytest.approx(float(scores[collection.doc_ids.index(doc)]), abs=1e-4)
        assert list(run[qid]) == [collection.doc_ids[i] for i in np.argsort(-scores)]


def tiny_rewriter(cache_dir) -> LMRewriter:
    cfg = dict(LLAMA, vocab_size=VOCAB_SIZE, tie_word_embeddings=False)
    config = config_from_hf(cfg)
    params = convert_state_dict(random_checkpoint(cfg, seed=2), config)
    sampling = SamplingConfig(queries_per_document=2, batch_size=4, max_new_tokens=5, seed=0)
    return LMRewriter(DecoderLM(config), params, char_tokenizer(), SPECIAL, sampling,
                      name="tiny", cache_dir=str(cache_dir))


def test_end_to_end_with_a_tiny_lm_writes_costs_to_metrics(tmp_path):
    collection = load_collection(write_collection(tmp_path / "c"), "test")
    retriever = QueryExpansionRetriever(SparseRetriever(), tiny_rewriter(tmp_path / "gen"),
                                        ["Expand: {query}", "Keywords for {query}"],
                                        query_repeats=5)
    record = evaluate_on_collection(collection, retriever, tmp_path / "w", top_k=6)
    stored = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert stored["metrics"] == record["metrics"] and stored["num_queries"] == 2
    timings = stored["timings"]
    assert timings["texts_per_query"] <= 4 and timings["generated_rows_per_query"] == 4
    assert timings["lm_tokens_per_query"] > timings["generated_rows_per_query"] * 10
    assert timings["flops_per_query"] > 0 and timings["lm_ms_per_query"] > 0
    # with query_repeats=5 the query's own terms dominate: the right document still comes first
    assert stored["metrics"]["nDCG@10"] == pytest.approx(1.0)
    again = QueryExpansionRetriever(SparseRetriever(), tiny_rewriter(tmp_path / "gen"),
                                    ["Expand: {query}", "Keywords for {query}"], query_repeats=5)
    assert again.retrieve(collection, collection.eval_queries(), k=6) == \
        retriever.retrieve(collection, collection.eval_queries(), k=6)
    assert again.timings["generated_rows_per_query"] == 0
