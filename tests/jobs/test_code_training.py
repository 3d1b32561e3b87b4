"""The learned-code jobs' shared data: hard negatives from an index's top ranks exclude the
judged positives, and the mapped batch iterator resumes its inner position."""
import numpy as np
import pytest

from irjax.data.collection import load_collection
from irjax.errors import ConfigError
from irjax.index.exact import ExactIndex
from irjax.jobs.code_training import (MappedIterator, corpus_rows, index_negatives,
                                      pair_batches, same_corpus)
from tests.helpers.tiny_collection import TRAIN, write_collection


class CharTokenizer:
    pad_id = 0

    def tokenize(self, texts, max_length):
        return [np.array([1] + [2 + ord(c) % 40 for c in t][:max_length - 2] + [1], np.int32)
                for t in texts]


@pytest.fixture(scope="module")
def train(tmp_path_factory):
    root = write_collection(tmp_path_factory.mktemp("tiny"))
    return load_collection(root, "train"), load_collection(root, "test")


def test_index_negatives_skip_and_exclude_positives(train):
    train, _ = train
    docs = np.eye(6, dtype=np.float32)
    index = ExactIndex().build(docs, train.doc_ids)
    # each query scores its own positive highest, then the documents in corpus order
    query_ids = list(TRAIN)
    vectors = np.stack([docs[train.doc_ids.index(d)] + 0.1 * np.linspace(1, 0, 6)
                        for _, d in TRAIN.values()])
    negatives = index_negatives(train, vectors, query_ids, index, depth=2, skip=1)
    for qid, (_, positive) in TRAIN.items():
        ranked = [d for d in train.doc_ids if d != positive]  # the order the index gives
        assert negatives[qid] == ranked[1:3]


def test_mapped_iterator_resumes_and_maps_rows(train):
    train, test = train
    same_corpus(train, test)
    batches, _ = pair_batches(train, CharTokenizer(), 2, 1, None, 8, seed=0)
    rows = corpus_rows(batches, train)
    assert [train.doc_ids[r] for r in rows] == batches.doc_ids
    mapped = MappedIterator(batches, lambda b: {"pos": rows[b["pos_doc_index"]]})
    next(mapped)
    state = mapped.get_state()
    expected = next(mapped)["pos"]
    again = MappedIterator(batches, lambda b: {"pos": rows[b["pos_doc_index"]]})
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["pos"], expected)


def test_different_corpora_are_refused(train, tmp_path):
    train, _ = train
    other = write_collection(tmp_path / "other")
    (other / "corpus.jsonl").write_text('{"_id": "x", "title": "", "text": "other"}\n')
    (other / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq5\tx\t1\n")
    with pytest.raises(ConfigError, match="different corpora"):
        same_corpus(train, load_collection(other, "test"))
