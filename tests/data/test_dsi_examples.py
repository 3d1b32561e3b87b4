"""DSI seq2seq examples: indexing, retrieval and pseudo-query examples, and their seeded mixture."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from irjax.data.collection import Collection, Document, LoadReport, load_collection
from irjax.data.docids import EOS_ID, AtomicDocids, DocidError, NaiveStringDocids
from irjax.data.dsi_examples import (DSIMixture, Seq2SeqExample, build_dsi_mixture,
                                     indexing_examples, pseudo_query_examples, retrieval_examples)
from irjax.data.tokenization import SentencePieceTokenizer


def toy_collection(num_docs: int = 20, split: str = "train") -> Collection:
    documents = [Document(f"d{i}", f"Title {i}", f"text of document {i} " * (i + 1))
                 for i in range(num_docs)]
    documents.append(Document("empty", "", ""))
    queries = {f"q{i}": f"question {i}" for i in range(6)}
    qrels = {"q0": {"d0": 1, "d1": 2, "d2": 0}, "q1": {"d3": 1}, "q2": {"d4": -1},
             "q3": {"d5": 1, "empty": 1}}
    return Collection("toy", split, Path("/toy"), documents, queries, qrels, LoadReport({}))


def test_examples_of_each_kind_end_in_eos():
    collection = toy_collection()
    scheme = AtomicDocids.build(collection)
    counts = {}
    indexing = indexing_examples(collection, scheme, counts=counts)
    assert [e.doc_id for e in indexing] == [f"d{i}" for i in range(20)]  # "empty" skipped
    assert counts == {"empty_documents_not_indexed": 1}
    assert indexing[2] == Seq2SeqExample("indexing", "d2", "d2", collection.documents[2].contents,
                                         (32128 + 2, EOS_ID))
    retrieval = retrieval_examples(collection, scheme, counts=counts)
    assert [(e.source_id, e.doc_id, e.inputs) for e in retrieval] == [
        ("q0", "d0", "question 0"), ("q0", "d1", "question 0"), ("q1", "d3", "question 1"),
        ("q3", "d5", "question 3"), ("q3", "empty", "question 3")]
    assert counts["non_positive_judgments_skipped"] == 2
    assert all(e.targets == scheme.docid_tokens(e.doc_id) + (EOS_ID,) for e in retrieval)
    assert len(retrieval_examples(collection, scheme, min_grade=2)) == 1
    pseudo = pseudo_query_examples({"d7": ["what is 7", " ", "seven?"], "d1": ["one"]}, scheme,
                                   counts=counts)
    assert [(e.doc_id, e.inputs, e.part) for e in pseudo] == [
        ("d1", "one", 0), ("d7", "what is 7", 0), ("d7", "seven?", 2)]
    assert counts["blank_pseudo_queries_skipped"] == 1
    with pytest.raises(DocidError, match=r"without a docid, e.g. \['nope'\]"):
        pseudo_query_examples({"nope": ["x"]}, scheme)


def test_indexing_chunks_cover_the_document_in_order():
    tokenizer = SentencePieceTokenizer()
    text = " ".join(f"word{i}" for i in range(60))
    docs = [Document("long", "", text), Document("short", "", "tiny")]
    scheme = AtomicDocids.build(["long", "short"])
    examples = indexing_examples(docs, scheme, chunks_per_doc=3, chunk_length=16, tokenizer=tokenizer)
    long_parts = [e for e in examples if e.doc_id == "long"]
    assert [e.part for e in long_parts] == [0, 1, 2]
    assert [e.doc_id for e in examples].count("short") == 1  # no empty chunks
    pieces = tokenizer.tokenize([text], 48, add_eos=False)[0].tolist()
    for i, e in enumerate(long_parts):
        assert e.inputs == tokenizer.decode(pieces[16 * i:16 * (i + 1)])
    assert long_parts[0].inputs.startswith("word0") and "word1" in long_parts[1].inputs + long_parts[2].inputs
    with pytest.raises(ValueError, match="needs chunk_length"):
        indexing_examples(docs, scheme, chunks_per_doc=2)


@pytest.mark.parametrize("ratio", [1.0, 3.0, 0.5])
def test_mixture_ratio_holds_on_scifact(shared_data, ratio):
    collection = load_collection(shared_data / "scifact", "train")
    scheme = AtomicDocids.build(collection)
    mixture = build_dsi_mixture(collection, scheme, indexing_to_retrieval_ratio=ratio, seed=1)
    sizes = Counter(e.kind for e in mixture.examples)
    assert sizes["indexing"] == 5183 and sizes["retrieval"] > 900
    for epoch in (0, 5):
        order = mixture.epoch_order(epoch)
        kinds = Counter(mixture.examples[i].kind for i in order.tolist())
        assert kinds["indexing"] / kinds["retrieval"] == pytest.approx(ratio, rel=2e-3)
        for kind, n in sizes.items():  # every example at least once, repeats within one of each other
            seen = np.bincount(order, minlength=len(mixture.examples))[
                [i for i, e in enumerate(mixture.examples) if e.kind == kind]]
            assert seen.min() >= 1 and seen.max() - seen.min() <= 1
        # shuffled: the first 1000 examples already show the ratio
        head = Counter(mixture.examples[i].kind for i in order[:1000].tolist())
        assert head["indexing"] / 1000 == pytest.approx(ratio / (1 + ratio), abs=0.07)


def test_mixture_is_deterministic_and_varies_by_epoch():
    collection = toy_collection()
    scheme = NaiveStringDocids.build(collection)
    a = build_dsi_mixture(collection, scheme, seed=3)
    b = build_dsi_mixture(collection, scheme, seed=3)
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.epoch_order(2), b.epoch_order(2))
    assert not np.array_equal(a.epoch_order(0), a.epoch_order(1))
    assert not np.array_equal(a.epoch_order(0), build_dsi_mixture(collection, scheme, seed=4).epoch_order(0))
    assert a.kind_counts == {"indexing": 20, "retrieval": 20} and a.epoch_size == 40


def test_mixture_weights_pseudo_queries_and_epoch_size():
    collection = toy_collection()
    scheme = AtomicDocids.build(collection)
    pseudo = {f"d{i}": [f"pq {i} a", f"pq {i} b"] for i in range(20)}
    mixture = build_dsi_mixture(collection, scheme, pseudo_queries=pseudo, indexing_to_retrieval_ratio=2,
                                pseudo_query_weight=1, examples_per_epoch=100)
    assert mixture.kind_counts == {"indexing": 50, "retrieval": 25, "pseudo_query": 25}
    assert len(mixture.epoch_order(0)) == 100
    only_retrieval = build_dsi_mixture(collection, scheme, indexing_to_retrieval_ratio=0)
    assert set(only_retrieval.kind_counts) == {"retrieval"} and only_retrieval.epoch_size == 5
    plain = DSIMixture(indexing_examples(collection, scheme), seed=0)  # no weights: a plain shuffle
    assert sorted(plain.epoch_order(0).tolist()) == list(range(20))
    with pytest.raises(ValueError, match="no pseudo_query examples"):
        DSIMixture(plain.examples, {"indexing": 1, "pseudo_query": 1})
    with pytest.raises(ValueError, match="miss kinds"):
        DSIMixture(plain.examples + only_retrieval.examples, {"indexing": 1})


def test_mixture_refuses_docids_of_another_collection():
    collection = toy_collection()
    scheme = AtomicDocids.build(toy_collection(num_docs=10))
    with pytest.raises(DocidError, match="/toy \\(train\\): atomic docids were built for 11 other"):
        build_dsi_mixture(collection, scheme)
