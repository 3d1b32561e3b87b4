"""The seq2seq (DSI) grain pipeline: fixed shapes, EOS placement, seeded epochs, exact resume."""
import json
from pathlib import Path

import numpy as np
import pytest

from irjax.data.collection import Collection, Document, LoadReport
from irjax.data.docids import EOS_ID, SemanticDocids
from irjax.data.dsi_examples import build_dsi_mixture
from irjax.data.seq2seq_pipeline import Seq2SeqBatches, make_seq2seq_iterator
from irjax.data.tokenization import SentencePieceTokenizer

B, LI = 6, 12


@pytest.fixture(scope="module")
def tokenizer():
    return SentencePieceTokenizer()


@pytest.fixture(scope="module")
def mixture():
    documents = [Document(f"d{i}", f"Title {i}", "some words " * (i % 9)) for i in range(40)]
    queries = {f"q{i}": f"what about {i}" for i in range(10)}
    qrels = {f"q{i}": {f"d{3 * i}": 1} for i in range(10)}
    collection = Collection("toy", "train", Path("/toy"), documents, queries, qrels, LoadReport({}))
    embeddings = np.random.default_rng(0).normal(size=(40, 4))
    scheme = SemanticDocids.build(collection, embeddings=embeddings, num_clusters=3)
    return build_dsi_mixture(collection, scheme, seed=5)  # 40 indexing + 40 retrieval per epoch


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_shapes_dtypes_and_eos_placement(mixture, tokenizer):
    iterator = make_seq2seq_iterator(mixture, tokenizer, B, inputs_max_length=LI)
    lt = max(len(e.targets) for e in mixture.examples)
    example = iterator.example_batch()
    for batch in take(iterator, 20):  # more than one epoch
        assert batch.keys() == example.keys() == {"inputs", "inputs_mask", "targets", "targets_mask"}
        for key, shape in (("inputs", (B, LI)), ("targets", (B, lt))):
            for name in (key, key + "_mask"):
                assert batch[name].shape == example[name].shape == shape
                assert batch[name].dtype == example[name].dtype == np.int32
        for ids, mask in ((batch["inputs"], batch["inputs_mask"]),
                          (batch["targets"], batch["targets_mask"])):
            lengths = mask.sum(1)
            assert (lengths >= 2).all()
            np.testing.assert_array_equal(mask, np.arange(mask.shape[1]) < lengths[:, None])
            np.testing.assert_array_equal(ids[np.arange(B), lengths - 1], EOS_ID)  # EOS last
            assert ((ids == EOS_ID).sum(1) == 1).all() and (ids[mask == 0] == 0).all()
        docids = {tuple(row[:n - 1]) for row, n in zip(batch["targets"].tolist(),
                                                       batch["targets_mask"].sum(1))}
        assert all(t >= 32128 for d in docids for t in d)


def test_batches_follow_the_mixture_order(mixture, tokenizer):
    data = Seq2SeqBatches(mixture, tokenizer, B, inputs_max_length=LI)
    assert data.steps_per_epoch == 13 and data.counts == {"remainder_examples_per_epoch": 2}
    order = mixture.epoch_order(1)
    batch = take(iter(data), data.steps_per_epoch + 3)[-1]  # epoch 1, step 2
    assert_same([batch], [data.materialize(data.global_rows(data.steps_per_epoch + 2))])
    expected = [mixture.examples[i] for i in order[2 * B:3 * B].tolist()]
    texts = tokenizer.decode_batch(batch["inputs"])
    for row, (text, example) in enumerate(zip(texts, expected)):
        assert example.inputs.startswith(text)
        n = len(example.targets)
        assert tuple(batch["targets"][row, :n].tolist()) == example.targets


def test_state_restore_resumes_the_exact_batches(mixture, tokenizer):
    def fresh(**options):
        return make_seq2seq_iterator(mixture, tokenizer, B, inputs_max_length=LI, **options)

    original = fresh()
    take(original, 11)
    state = json.loads(json.dumps(original.get_state()))  # stored as JSON with the checkpoint
    expected = take(original, 6)  # crosses the epoch boundary at step 13
    resumed = fresh()
    resumed.set_state(state)
    assert_same(take(resumed, 6), expected)
    with pytest.raises(ValueError, match="seq2seq pipeline with different data"):
        make_seq2seq_iterator(mixture, tokenizer, B + 1, inputs_max_length=LI).set_state(state)
    with pytest.raises(ValueError, match="not an irjax input-pipeline state"):
        fresh().set_state({"next_index": 3})
    with pytest.raises(ValueError, match="belongs to a 'dual_encoder' pipeline"):
        fresh().set_state({k: v for k, v in state.items() if k != "kind"})
    fresh().set_state({k: v for k, v in state.items() if k != "worker_count"})  # older states
    extended = fresh()
    extended.set_state(fresh(num_epochs=1).get_state())  # num_epochs may change on resume


def test_processes_split_the_global_batch(mixture, tokenizer):
    whole = take(make_seq2seq_iterator(mixture, tokenizer, B, inputs_max_length=LI), 3)
    parts = [take(make_seq2seq_iterator(mixture, tokenizer, B, inputs_max_length=LI,
                                        process_index=p, process_count=2), 3) for p in range(2)]
    for step, batch in enumerate(whole):
        for key in batch:
            np.testing.assert_array_equal(
                np.concatenate([parts[0][step][key], parts[1][step][key]]), batch[key])


def test_finite_epochs_and_bad_settings(mixture, tokenizer):
    assert len(list(make_seq2seq_iterator(mixture, tokenizer, 40, num_epochs=2))) == 4
    with pytest.raises(ValueError, match="targets_max_length=2 but document"):
        Seq2SeqBatches(mixture, tokenizer, B, targets_max_length=2)
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        Seq2SeqBatches(mixture, tokenizer, 81)
    wide = Seq2SeqBatches(mixture, tokenizer, B, inputs_max_length=LI, targets_max_length=9)
    assert wide.example_batch()["targets"].shape == (B, 9)
