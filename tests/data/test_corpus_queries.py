"""Pseudo queries cut from the corpus: spans and sentences are deterministic per seed, independent
of corpus order, and never leave their document; every source mixes into a DSI mixture by weight."""
import re

import numpy as np
import pytest

from irjax.data.collection import Document
from irjax.data.corpus_queries import (SOURCES, corpus_queries, document_rng, random_spans,
                                       sentences, source_counts, split_sentences)
from irjax.data.docids import AtomicDocids
from irjax.data.dsi_examples import KINDS, build_dsi_mixture
from irjax.data.collection import load_collection
from tests.helpers.tiny_collection import write_collection

LONG = ("Alterations of the architecture of cerebral white matter in the developing human brain "
        "can affect cortical development. A line scan diffusion-weighted MRI sequence was applied "
        "to measure the apparent diffusion coefficient! Were 17 preterm infants studied? Yes, "
        "e.g. at 28 weeks and again at term. 3 groups were compared with controls.")
DOCS = [Document("a", "Brain white matter", LONG),
        Document("b", "", "short text only"),
        Document("c", "Title only document", ""),
        Document("d", "", "   "),
        Document("e", "Numbers", " ".join(f"w{i}" for i in range(300)))]


def words_of(text: str) -> str:
    return " " + " ".join(text.split()) + " "


def inside(piece: str, text: str) -> bool:
    """`piece` is a contiguous run of whole words of `text` (white space collapsed)."""
    return (" " + piece + " ") in words_of(text)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_spans_are_deterministic_per_seed_and_never_leave_the_document(seed):
    spans = corpus_queries(DOCS, "spans", seed=seed, count=10, length=8)
    assert spans == corpus_queries(DOCS, "spans", seed=seed, count=10, length=8)
    # Each document's draw is its own: corpus order does not change it (dicts compare unordered).
    assert spans == corpus_queries(DOCS[::-1], "spans", seed=seed, count=10, length=8)
    by_id = {d.doc_id: d for d in DOCS}
    for doc_id, found in spans.items():
        text = by_id[doc_id].text if by_id[doc_id].text.strip() else by_id[doc_id].title
        for span in found:
            assert inside(span, text), (doc_id, span)
            assert len(span.split()) == min(8, len(text.split()))
    assert len(spans["a"]) == 10 and len(set(spans["a"])) == 10  # distinct starting words
    assert len(spans["e"]) == 10
    assert spans["b"] == ["short text only"]  # shorter than a span: the whole text, once
    assert spans["c"] == ["Title only document"]  # no text: the title stands in
    assert "d" not in spans  # nothing to cut


def test_spans_differ_between_seeds_and_do_not_depend_on_other_documents():
    a = corpus_queries(DOCS, "spans", seed=0, count=5, length=16)["e"]
    b = corpus_queries(DOCS, "spans", seed=1, count=5, length=16)["e"]
    alone = corpus_queries([DOCS[-1]], "spans", seed=0, count=5, length=16)["e"]
    assert a != b and a == alone
    starts = [int(s.split()[0][1:]) for s in a]
    assert starts == sorted(starts) and max(starts) <= 300 - 16


def test_random_spans_on_random_texts_stay_inside():
    rng = np.random.default_rng(0)
    vocab = [f"t{i}" for i in range(50)] + ["x.", "Y,", "(z)"]
    for trial in range(200):
        text = "  ".join(rng.choice(vocab, size=int(rng.integers(0, 120))).tolist())
        count, length = int(rng.integers(1, 12)), int(rng.integers(1, 70))
        spans = random_spans(text, count, length, document_rng(trial, "doc"))
        assert spans == random_spans(text, count, length, document_rng(trial, "doc"))
        assert len(spans) <= count
        for span in spans:
            assert inside(span, text)


def test_sentences_split_at_sentence_ends_only():
    found = split_sentences(LONG)
    assert found == [
        "Alterations of the architecture of cerebral white matter in the developing human brain "
        "can affect cortical development.",
        "A line scan diffusion-weighted MRI sequence was applied to measure the apparent "
        "diffusion coefficient!",
        "Were 17 preterm infants studied?",
        "Yes, e.g. at 28 weeks and again at term.",
        "3 groups were compared with controls."]
    every = corpus_queries(DOCS, "sentences", min_words=4)
    assert every["a"] == found and all(inside(s, LONG) for s in every["a"])
    some = corpus_queries(DOCS, "sentences", seed=3, count=2, min_words=4)
    assert len(some["a"]) == 2 and some == corpus_queries(DOCS, "sentences", seed=3, count=2)
    assert [found.index(s) for s in some["a"]] == sorted(found.index(s) for s in some["a"])
    assert sentences("one two. Three four five six.", np.random.default_rng(0), min_words=3) == \
        ["Three four five six."]


def test_start_and_title_sources():
    start = corpus_queries(DOCS, "start", length=4)
    assert start["a"] == ["Alterations of the architecture"]
    titles = corpus_queries(DOCS, "title")
    assert titles == {"a": ["Brain white matter"], "c": ["Title only document"],
                      "e": ["Numbers"]}
    assert source_counts(titles) == {"documents": 3, "queries": 3, "per_document": 1.0}
    with pytest.raises(ValueError, match="unknown pseudo-query source"):
        corpus_queries(DOCS, "paragraphs")
    assert set(SOURCES) <= set(KINDS)


def test_corpus_sources_mix_with_labelled_queries_by_weight(tmp_path):
    collection = load_collection(write_collection(tmp_path / "tiny"), "train")
    scheme = AtomicDocids.build(collection)
    texts = {d.doc_id: d.text for d in collection.documents}
    spans = corpus_queries(collection, "spans", count=3, length=3)
    titles = corpus_queries(collection, "title")
    assert titles == {}  # the tiny collection has no titles
    mixture = build_dsi_mixture(collection, scheme, indexing_to_retrieval_ratio=1.0,
                                retrieval_weight=1.0, corpus_queries={"spans": spans},
                                corpus_query_weights={"spans": 2.0})
    assert mixture.kind_sizes == {"indexing": 6, "retrieval": 4, "spans": 18}
    assert mixture.kind_counts == {"indexing": 9, "retrieval": 9, "spans": 18}
    for e in mixture.examples:
        if e.kind == "spans":
            assert inside(e.inputs, texts[e.doc_id])
            assert e.targets == scheme.docid_tokens(e.doc_id) + (1,)
    no_labels = build_dsi_mixture(collection, scheme, retrieval_weight=0.0,
                                  corpus_queries={"spans": spans})
    assert set(no_labels.kind_sizes) == {"indexing", "spans"}
    with pytest.raises(ValueError, match="without corpus queries"):
        build_dsi_mixture(collection, scheme, corpus_query_weights={"sentences": 1.0})


def test_inside_helper_respects_word_boundaries():
    assert inside("b c", "a b c d") and not inside("b c", "a bb c d")
    assert re.sub(r"\s+", " ", " a  b ") == " a b "
