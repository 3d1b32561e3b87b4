"""The grain training pipeline: seeded order, per-process rows of one global batch, exact resume."""
import json
import zlib

import grain
import numpy as np
import pytest

from irjax.data.pipeline import DualEncoderBatches, make_train_iterator
from irjax.data.training_examples import TrainingPair

B = 8


class WordTokenizer:
    """Stand-in for WordPiece: one id per word, [CLS]=1 ... [SEP]=2, padding 0."""

    pad_id, cls_id, sep_id, vocab_size = 0, 1, 2, 1003

    def tokenize(self, texts, max_length):
        return [np.array([1] + [zlib.crc32(w.encode()) % 1000 + 3 for w in t.split()][:max_length - 2]
                         + [2], dtype=np.int32) for t in texts]


def doc_text(doc_id):
    return f"document {doc_id} " + " ".join(f"w{doc_id}{i}" for i in range(len(doc_id) * 3))


def make_pairs():
    """40 queries; q0..q7 have a second positive; q39 shares q38's positive document."""
    pairs = [TrainingPair(f"q{q}", f"query {q} about topic {q % 4}", f"d{q}", doc_text(f"d{q}"))
             for q in range(39)]
    pairs.append(TrainingPair("q39", "query 39 about topic 3", "d38", doc_text("d38")))
    pairs += [TrainingPair(f"q{q}", f"query {q} about topic {q % 4}", f"d{100 + q}",
                           doc_text(f"d{100 + q}")) for q in range(8)]
    return pairs


PAIRS = make_pairs()
DOCUMENTS = {p.pos_id: p.pos_text for p in PAIRS} | {f"n{i}": doc_text(f"n{i}") for i in range(60)}
HARD = {f"q{q}": [f"n{(3 * q + j) % 60}" for j in range(5)] for q in range(40)}
HARD["q0"] = ["d0", "n1", "n2"]  # a positive slipped in: must be removed and counted
HARD["q5"] = ["n7"]  # too few: topped up with random documents


def batches(**options):
    settings = dict(seed=0, num_epochs=None, num_hard_negatives=2, hard_negatives=HARD,
                    documents=DOCUMENTS, query_max_length=8, doc_max_length=16)
    settings.update(options)
    return DualEncoderBatches(PAIRS, WordTokenizer(), settings.pop("global_batch_size", B), **settings)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def pair_keys(batch):
    return list(zip(batch["query_index"].tolist(), batch["pos_doc_index"].tolist()))


def test_each_epoch_is_one_pass_with_distinct_queries_per_batch():
    data = batches(num_epochs=2)
    assert data.steps_per_epoch == 6 and data.counts["remainder_pairs_per_epoch"] == 0
    epochs = []
    all_batches = list(iter(data))
    assert len(all_batches) == 12  # finite: stops after two epochs
    for epoch in range(2):
        seen = []
        for batch in all_batches[6 * epoch:6 * epoch + 6]:
            assert len(set(batch["query_index"].tolist())) == B  # no query twice in a batch
            seen += pair_keys(batch)
        expected = [(data.query_ids.index(p.qid), data.doc_ids.index(p.pos_id)) for p in PAIRS]
        assert sorted(seen) == sorted(expected)  # every pair exactly once
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled each epoch


def test_same_seed_same_batches_and_another_seed_another_order():
    first = take(iter(batches(seed=7)), 4)
    assert_batches_equal(first, take(iter(batches(seed=7)), 4))
    other = take(iter(batches(seed=8)), 4)
    assert [pair_keys(b) for b in first] != [pair_keys(b) for b in other]


@pytest.mark.parametrize("count", [2, 3])
def test_process_rows_concatenate_to_the_one_process_global_batch(count):
    full = take(iter(batches(process_index=0, process_count=1)), 7)
    parts = [take(iter(batches(process_index=i, process_count=count)), 7) for i in range(count)]
    assert sum(len(p[0]["query_ids"]) for p in parts) == B
    for step, batch in enumerate(full):
        for key, value in batch.items():
            np.testing.assert_array_equal(np.concatenate([p[step][key] for p in parts]), value,
                                          err_msg=f"step {step} field {key}")


def test_saved_state_resumes_the_identical_sequence_across_an_epoch_end():
    original = iter(batches())
    take(original, 4)
    state = json.loads(json.dumps(original.get_state()))  # stored as JSON with the checkpoint
    assert state["grain"] == {"next_index": 4}
    expected = take(original, 5)  # steps 4..8 cross into epoch 1
    resumed = iter(batches())
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 5), expected)
    # The step position is global, so a 2-process restart resumes the same rows too.
    half = iter(batches(process_index=1, process_count=2))
    half.set_state(state)
    assert_batches_equal([next(half)], [{k: v[4:] for k, v in expected[0].items()}])


def test_state_from_a_different_pipeline_is_refused():
    state = iter(batches(seed=1)).get_state()
    with pytest.raises(ValueError, match="dual_encoder pipeline with different data, seed or batch settings"):
        iter(batches(seed=2)).set_state(state)
    with pytest.raises(ValueError, match="not an irjax input-pipeline state"):
        iter(batches(seed=1)).set_state({"next_index": 3})
    extended = iter(batches(seed=1, num_epochs=None))  # more epochs: same sequence, accepted
    extended.set_state(iter(batches(seed=1, num_epochs=1)).get_state())
    with pytest.raises(ValueError, match="saved with worker_count=2"):  # grain state differs
        iter(batches(seed=1)).set_state(dict(state, worker_count=2))
    with pytest.raises(ValueError, match="belongs to a 'seq2seq' pipeline"):
        iter(batches(seed=1)).set_state(dict(state, kind="seq2seq"))
    legacy = {k: v for k, v in state.items() if k != "kind"}  # saved before the shared iterator
    iter(batches(seed=1)).set_state(legacy)


def test_negatives_are_never_positives_and_come_from_the_mined_lists():
    data = batches()
    assert data.counts["negatives_that_are_positives_removed"] == 1
    assert data.counts["queries_topped_up_with_random_negatives"] == 1
    tokenizer = WordTokenizer()
    positives = {}
    for p in PAIRS:
        positives.setdefault(p.qid, set()).add(p.pos_id)
    for batch in take(iter(data), 12):
        for row, q in enumerate(batch["query_index"].tolist()):
            qid = data.query_ids[q]
            negatives = [data.doc_ids[d] for d in batch["neg_doc_index"][row].tolist()]
            assert len(set(negatives)) == 2 and not set(negatives) & positives[qid]
            if qid == "q5":
                assert "n7" in negatives
            else:
                assert set(negatives) <= set(HARD[qid]) - {"d0"}
            for j, doc in enumerate(negatives):  # the tokens really are that document
                ids = tokenizer.tokenize([DOCUMENTS[doc]], 16)[0]
                np.testing.assert_array_equal(batch["neg_ids"][row, j, :len(ids)], ids)


def test_logit_mask_hides_other_positives_of_the_query():
    data = batches(global_batch_size=40, seed=3)  # all 40 queries in one batch
    assert data.steps_per_epoch == 1 and data.counts["pairs_beyond_one_per_batch_per_epoch"] == 8
    batch = next(iter(data))
    assert batch["logit_mask"].shape == (40, 40 * 3)
    np.testing.assert_array_equal(batch["labels"], np.arange(40))
    rows = {data.query_ids[q]: i for i, q in enumerate(batch["query_index"].tolist())}
    mask = batch["logit_mask"]
    assert mask[np.arange(40), batch["labels"]].all()
    # q38 and q39 share positive d38: each other's positive column is hidden.
    assert not mask[rows["q38"], rows["q39"]] and not mask[rows["q39"], rows["q38"]]
    # Every hidden column, and only those, holds another positive of the row's query.
    positives = {}
    for p in PAIRS:
        positives.setdefault(p.qid, set()).add(p.pos_id)
    candidates = [data.doc_ids[d] for d in np.concatenate(
        [batch["pos_doc_index"], batch["neg_doc_index"].reshape(-1)]).tolist()]
    for i, q in enumerate(batch["query_index"].tolist()):
        expected = [c == i or doc not in positives[data.query_ids[q]] for c, doc in enumerate(candidates)]
        assert mask[i].tolist() == expected


def test_teacher_scores_are_carried_and_unscored_pairs_dropped():
    teacher = {}
    for p in PAIRS:
        if p.pos_id != "d107":
            teacher.setdefault(p.qid, {})[p.pos_id] = float(len(p.pos_id))
    for qid, docs in HARD.items():
        for i, doc in enumerate(docs):
            teacher[qid].setdefault(doc, -float(i))
    data = batches(teacher=teacher)
    assert data.counts["pairs_without_teacher_score_dropped"] == 1
    assert data.counts["pairs_without_enough_scored_negatives_dropped"] == 2  # q5: one negative
    assert data.steps_per_epoch == 5 and data.counts["remainder_pairs_per_epoch"] == 5
    for batch in take(iter(data), 6):
        for row, q in enumerate(batch["query_index"].tolist()):
            scores = teacher[data.query_ids[q]]
            assert batch["teacher_pos"][row] == scores[data.doc_ids[batch["pos_doc_index"][row]]]
            assert batch["teacher_neg"][row].tolist() == [
                scores[data.doc_ids[d]] for d in batch["neg_doc_index"][row].tolist()]
    with pytest.raises(ValueError, match="needs num_hard_negatives >= 1"):
        batches(teacher=teacher, num_hard_negatives=0)


def test_fixed_shapes_with_truncation_and_padding():
    long_query = TrainingPair("long", " ".join(["word"] * 100), "dl", "short doc")
    data = DualEncoderBatches([long_query] + PAIRS[1:], WordTokenizer(), B, query_max_length=8,
                              doc_max_length=16, seed=0)
    batch = data.materialize(data.global_rows(0))
    example = data.example_batch()
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (v.shape, v.dtype) for k, v in example.items()}
    assert batch["query_ids"].shape == (B, 8) and batch["pos_ids"].shape == (B, 16)
    assert "neg_ids" not in batch and batch["logit_mask"].shape == (B, B)
    for _ in range(6):  # find the long query in the epoch
        if 0 in batch["query_index"]:
            break
        batch = data.materialize(data.global_rows(_ + 1))
    row = batch["query_index"].tolist().index(0)
    assert batch["query_mask"][row].tolist() == [1] * 8 and batch["query_ids"][row, -1] == 2
    assert batch["pos_mask"][row].tolist() == [1] * 4 + [0] * 12  # [CLS] short doc [SEP]
    assert batch["pos_ids"][row, 4:].tolist() == [0] * 12


def test_wordpiece_tokens_are_truncated_and_padded_to_fixed_lengths():
    from irjax.data.tokenization import WordPieceTokenizer
    from irjax.models.pretrained import find_minilm_dir
    try:
        tokenizer = WordPieceTokenizer(find_minilm_dir())
    except FileNotFoundError as err:
        pytest.skip(str(err))
    pairs = [TrainingPair(f"q{i}", "what causes " + "very " * (i * 10) + "cancer", f"d{i}",
                          f"doc {i}") for i in range(B)]
    batch = next(make_train_iterator(pairs, tokenizer, B, query_max_length=12, doc_max_length=10))
    for row, q in enumerate(batch["query_index"].tolist()):
        ids, mask = batch["query_ids"][row], batch["query_mask"][row]
        length = int(mask.sum())
        assert ids[0] == tokenizer.cls_id and ids[length - 1] == tokenizer.sep_id
        assert (ids[length:] == tokenizer.pad_id).all() and (mask[:length] == 1).all()
        assert length == (12 if q > 0 else 5)  # [CLS] what causes cancer [SEP]
        assert tokenizer.decode(batch["pos_ids"][row]) == pairs[q].pos_text


def test_tas_balanced_batches_come_from_one_cluster():
    clusters = {f"q{q}": q % 4 for q in range(40)}
    data = batches(sampler="tas_balanced", query_clusters=clusters, seed=4)
    used = set()
    for batch in take(iter(data), 10):
        topics = {clusters[data.query_ids[q]] for q in batch["query_index"].tolist()}
        assert len(topics) == 1 and len(set(batch["query_index"].tolist())) == B
        used |= topics
    assert used == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="needs query_clusters"):
        batches(sampler="tas_balanced")
    with pytest.raises(ValueError, match="min_cluster_size=8"):
        batches(sampler="tas_balanced", query_clusters={f"q{q}": q % 6 for q in range(40)})


def test_tas_balanced_with_teacher_balances_margin_bins():
    """17 of 20 candidates sit in the smallest-margin bin; balanced sampling still uses each of
    the 4 bins about equally, where uniform sampling (the random sampler) mostly picks bin 0."""
    hard = {f"q{q}": [f"n{j}" for j in range(20)] for q in range(40)}
    teacher = {}
    for p in PAIRS:
        scores = teacher.setdefault(p.qid, {p.pos_id: 10.0})
        scores[p.pos_id] = 10.0
        scores.update({f"n{j}": 9.9 - 0.01 * j for j in range(16)})
        scores.update({"n16": 9.0, "n17": 8.0, "n18": 7.0, "n19": 6.0})  # margins 1, 2, 3, 4
    bin_of = {f"n{j}": 0 for j in range(17)} | {"n17": 1, "n18": 2, "n19": 3}
    usage = {}
    for sampler in ("tas_balanced", "random"):
        data = batches(sampler=sampler, query_clusters={f"q{q}": q % 4 for q in range(40)},
                       hard_negatives=hard, teacher=teacher, num_hard_negatives=1, margin_bins=4)
        counts = np.zeros(4)
        for batch in take(iter(data), 25):
            for d in batch["neg_doc_index"][:, 0].tolist():
                counts[bin_of[data.doc_ids[d]]] += 1
        usage[sampler] = counts / counts.sum()
    assert usage["tas_balanced"].min() > 0.15 and usage["tas_balanced"].max() < 0.35
    assert usage["random"][0] > 0.7


def test_bad_configurations_fail_clearly():
    assert isinstance(batches().dataset(), grain.IterDataset)
    with pytest.raises(ValueError, match="48 usable pairs of 40 queries cannot fill one global batch of 64"):
        batches(global_batch_size=64)
    with pytest.raises(ValueError, match="needs `documents`"):
        batches(documents=None)
    with pytest.raises(ValueError, match="negative 'zz' of query 'q1' is not in `documents`"):
        batches(hard_negatives={"q1": ["zz"]})
    with pytest.raises(ValueError, match="documents: document 'd3' has a different text"):
        batches(documents=DOCUMENTS | {"d3": "other text"})
    with pytest.raises(ValueError, match="unknown sampler"):
        batches(sampler="hard")
