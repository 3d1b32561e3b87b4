"""Training pairs: one per judgment with grade >= min_grade, fixed order, every skip counted."""
from pathlib import Path

import pytest

from irjax.data.collection import Collection, Document, LoadReport, load_collection
from irjax.data.training_examples import (
    TrainingPair,
    build_training_pairs,
    relevant_documents,
)


def toy_collection() -> Collection:
    documents = [Document("d1", "Title one", "text one"), Document("d2", "", "text two"),
                 Document("d3", "Three", ""), Document("d4", "", ""), Document("d5", "", "five")]
    queries = {"q1": "first query", "q2": "second query", "q3": "third query", "q4": "unjudged"}
    qrels = {"q2": {"d2": 2, "d1": 1, "d5": 0},  # qrels order, not queries order, must not matter
             "q1": {"d3": 1, "d4": 2, "d5": -1},
             "q3": {"d1": 0}}
    return Collection("toy", "train", Path("/toy"), documents, queries, qrels, LoadReport({}))


def test_one_pair_per_positive_judgment_in_query_then_qrels_order():
    pairs = build_training_pairs(toy_collection())
    assert list(pairs) == [
        TrainingPair("q1", "first query", "d3", "Three"),
        TrainingPair("q2", "second query", "d2", "text two"),
        TrainingPair("q2", "second query", "d1", "Title one text one"),
    ]
    assert pairs.query_ids == ["q1", "q2"]
    assert pairs.counts == {"non_positive_judgments_skipped": 3, "below_min_grade_skipped": 0,
                            "empty_positive_documents_skipped": 1, "queries_without_pairs": 1}
    summary = pairs.summary()
    assert "3 training pairs from 2 queries" in summary
    assert "3 judgments with grade <= 0 skipped" in summary
    assert "1 relevant documents with no title and no text skipped" in summary


def test_min_grade_keeps_only_higher_grades_and_counts_the_rest():
    pairs = build_training_pairs(toy_collection(), min_grade=2)
    assert [(p.qid, p.pos_id) for p in pairs] == [("q2", "d2")]
    assert pairs.counts["below_min_grade_skipped"] == 2  # q1/d3 and q2/d1
    assert pairs.counts["empty_positive_documents_skipped"] == 1  # q1/d4 has grade 2 but no text
    assert pairs.counts["queries_without_pairs"] == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_min_grade_below_one_is_rejected(bad):
    with pytest.raises(ValueError, match="min_grade must be an integer >= 1"):
        build_training_pairs(toy_collection(), min_grade=bad)


def test_no_pairs_is_an_error_naming_the_collection():
    with pytest.raises(ValueError, match=r"/toy: split 'train' has no judgment with grade >= 3"):
        build_training_pairs(toy_collection(), min_grade=3)


def test_pairs_are_an_immutable_sequence():
    pairs = build_training_pairs(toy_collection())
    assert len(pairs) == 3 and pairs[-1].pos_id == "d1" and [p.qid for p in pairs[:2]] == ["q1", "q2"]
    with pytest.raises(Exception):
        pairs[0].qid = "changed"


def test_relevant_documents_groups_positives_by_query():
    assert relevant_documents(build_training_pairs(toy_collection())) == {"q1": {"d3"},
                                                                           "q2": {"d1", "d2"}}


def test_scifact_train_gives_one_pair_per_judgment(shared_data):
    collection = load_collection(shared_data / "scifact", "train")
    pairs = build_training_pairs(collection)
    assert len(pairs) == 919 and len(pairs.query_ids) == 809
    assert not any(pairs.counts.values())
    assert all(p.query == collection.queries[p.qid] for p in pairs)
