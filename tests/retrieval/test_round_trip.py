"""Round-trip filter: ranks of the source document in a hand-made run, ties ordered as the
metrics order them, and the keep decision at a depth."""
import pytest

from irjax.retrieval.round_trip import keep_flags, round_trip_filter, round_trip_ranks

RUN = {"g1": {"a": 0.9, "b": 0.5, "c": 0.1},
       "g2": {"a": 0.9, "b": 0.8, "c": 0.7},
       "g3": {"a": 0.5, "b": 0.5},          # tie: trec_eval order (descending id) puts "b" first
       "g4": {"x": 1.0}}
SOURCES = {"g1": "a", "g2": "c", "g3": "a", "g4": "a"}


def test_ranks_and_keep_flags_against_a_hand_made_ranking():
    ranks = round_trip_ranks(RUN, SOURCES)
    assert ranks == {"g1": 1, "g2": 3, "g3": 2, "g4": None}
    assert keep_flags(ranks, 1) == {"g1": True, "g2": False, "g3": False, "g4": False}
    assert keep_flags(ranks, 2) == {"g1": True, "g2": False, "g3": True, "g4": False}
    assert keep_flags(ranks, 3) == {"g1": True, "g2": True, "g3": True, "g4": False}
    with pytest.raises(ValueError, match="depth must be >= 1"):
        keep_flags(ranks, 0)


class FixedRetriever:
    """Returns RUN (cut to k) and records what it was asked."""

    def __init__(self):
        self.asked = None

    def retrieve(self, collection, queries, k):
        self.asked = (dict(queries), k)
        return {q: dict(sorted(RUN[q].items(), key=lambda kv: -kv[1])[:k]) for q in queries}


def test_filter_searches_to_the_depth_and_ranks_sources():
    retriever = FixedRetriever()
    queries = {q: f"text {q}" for q in SOURCES}
    ranks = round_trip_filter(retriever, None, queries, SOURCES, 2)
    assert retriever.asked == (queries, 2)
    assert ranks == {"g1": 1, "g2": None, "g3": 2, "g4": None}
    with pytest.raises(ValueError, match="same query ids"):
        round_trip_filter(retriever, None, {"g1": "x"}, SOURCES, 2)
