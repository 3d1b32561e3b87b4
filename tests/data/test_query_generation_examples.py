"""Document -> query examples: only grade > 0 judgments, targets cut to the length with EOS last,
and a seeded held-out slice that takes whole queries out of training."""
import pytest

from irjax.data.collection import load_collection
from irjax.data.query_generation_examples import heldout_queries, query_generation_examples
from irjax.data.tokenization import SentencePieceTokenizer
from tests.helpers.tiny_collection import DOCS, TRAIN, write_collection


@pytest.fixture(scope="module")
def tokenizer():
    return SentencePieceTokenizer()


def test_examples_targets_and_heldout_split(tmp_path, tokenizer):
    root = write_collection(tmp_path / "tiny")
    # q1 also judges d2 relevant and d3 non-relevant: two pairs for q1, the 0 grade skipped.
    (root / "qrels" / "train.tsv").write_text(
        (root / "qrels" / "train.tsv").read_text() + "q1\td2\t2\nq1\td3\t0\n")
    data = query_generation_examples(load_collection(root, "train"), tokenizer,
                                     targets_max_length=4, heldout_fraction=0.3, seed=1)
    assert data.counts["non_positive_judgments_skipped"] == 1
    assert len(data.train) + len(data.heldout) == 5
    assert data.heldout_query_ids == heldout_queries(sorted(TRAIN), 0.3, seed=1)
    assert {e.source_id for e in data.heldout} == set(data.heldout_query_ids)
    assert not {e.source_id for e in data.train} & set(data.heldout_query_ids)
    for e in data.train + data.heldout:
        assert e.inputs == DOCS[e.doc_id]
        assert len(e.targets) <= 4 and e.targets[-1] == tokenizer.eos_id
        query = TRAIN[e.source_id][0]
        assert list(e.targets[:-1]) == tokenizer.tokenize([query], 4)[0][:-1].tolist()
    long = sum(len(tokenizer.tokenize([TRAIN[e.source_id][0]], 99, add_eos=False)[0]) > 3
               for e in data.train + data.heldout)
    assert data.counts["truncated_targets"] == long > 0


def test_heldout_queries_is_seeded_and_never_takes_all():
    ids = [f"q{i}" for i in range(100)]
    assert heldout_queries(ids, 0.05, 0) == heldout_queries(ids, 0.05, 0)
    assert len(heldout_queries(ids, 0.05, 0)) == 5
    assert heldout_queries(ids, 0.05, 0) != heldout_queries(ids, 0.05, 1)
    assert heldout_queries(["a", "b"], 0.9, 0) != ["a", "b"]
    assert heldout_queries(["a"], 0.5, 0) == [] and heldout_queries(ids, 0.0, 0) == []
    with pytest.raises(ValueError, match="heldout_fraction"):
        heldout_queries(ids, 1.0, 0)


def test_no_positive_pairs_is_an_error(tmp_path, tokenizer):
    root = write_collection(tmp_path / "tiny")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    with pytest.raises(ValueError, match="grade > 0"):
        query_generation_examples(load_collection(root, "train"), tokenizer)
