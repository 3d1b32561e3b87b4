"""Distractor passages: real sentences only, recombined deterministically per seed, the first N of
M passages are the corpus of N, and ids never collide with the studied collection's."""
import numpy as np

from irjax.data.collection import Document
from irjax.data.distractors import (ID_PREFIX, SentencePool, distractor_documents, make_passage,
                                    passage_length, split_sentences, used_sentences)

SOURCE = [("a", Document(f"x{i}", "", " ".join(
    f"Sentence {j} of source document {i} says something quite specific." for j in range(6))))
    for i in range(20)] + [("b", Document("short", "", "Too short. Tiny."))]


def test_sentences_are_split_on_end_punctuation_and_short_ones_dropped():
    assert split_sentences("One two three four. Five six! Seven eight nine ten?  ") == [
        "One two three four.", "Seven eight nine ten?"]


def test_passages_use_only_pool_sentences_and_are_deterministic():
    pool = SentencePool.from_documents(SOURCE)
    assert pool.num_documents == 20  # the document without a 4-word sentence is skipped
    sentences = set(pool.sentences)
    first = list(distractor_documents(pool, 50, seed=3))
    again = list(distractor_documents(pool, 80, seed=3))[:50]
    assert first == again  # passage i depends on (seed, i) only: N passages are a prefix of M
    assert list(distractor_documents(pool, 50, seed=4)) != first
    for document in first:
        assert document.doc_id.startswith(ID_PREFIX)
        text, parts = make_passage(pool, int(document.doc_id[len(ID_PREFIX):]), 3)
        assert text == document.text and parts
        assert all(pool.sentences[p] in sentences for p in parts)
        assert document.text == " ".join(pool.sentences[p] for p in parts)
    assert len({d.doc_id for d in first}) == 50
    assert 0 < used_sentences(pool, 50, seed=3) <= pool.distinct_sentences()


def test_lengths_follow_a_clipped_log_normal_around_56_words():
    rng = np.random.default_rng(0)
    lengths = np.array([passage_length(rng) for _ in range(5000)])
    assert lengths.min() >= 20 and lengths.max() <= 150
    assert 50 < lengths.mean() < 62
