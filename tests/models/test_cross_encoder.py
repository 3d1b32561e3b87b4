"""The cross-encoder: pair tokenisation, MiniLM weights really loaded, the LCE loss against numpy,
bucketed scoring equal to unbucketed, and the save/load round trip."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.data.tokenization import WordPieceTokenizer
from irjax.errors import InputFileError, MissingFileError
from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.cross_encoder import CrossEncoder, CrossEncoderScorer, pair_flops
from irjax.models.cross_encoder_training import CrossEncoderModel, localized_contrastive_loss
from irjax.models.efficiency import EncoderEfficiency
from irjax.models.hf_import import load_bert_params
from irjax.models.pretrained import load_checkpoint

QUERIES = ["which big cat lives in america", "how is coffee made", "what carves valleys",
           "instrument with a bow", "language"]
DOCS = ["The jaguar is a large cat native to the Americas.",
        "Coffee is brewed from roasted coffee beans, " * 6,
        "Glaciers are slow rivers of ice that carve valleys.",
        "Python is a programming language with dynamic typing.",
        "Violins are string instruments played with a bow, and violas too."]


@pytest.fixture(scope="module")
def minilm():
    checkpoint = load_checkpoint()
    return checkpoint, WordPieceTokenizer(checkpoint.directory)


def pieces(tokenizer, text):
    return [int(i) for i in tokenizer.tokenize([text], 512)[0][1:-1]]


def test_pairs_are_cls_query_sep_document_sep_with_segments(minilm):
    _, tok = minilm
    (ids, types), = tok.tokenize_pairs([QUERIES[0]], [DOCS[0]], max_length=64)
    q, d = pieces(tok, QUERIES[0]), pieces(tok, DOCS[0])
    assert ids.tolist() == [tok.cls_id, *q, tok.sep_id, *d, tok.sep_id]
    assert types.tolist() == [0] * (len(q) + 2) + [1] * (len(d) + 1)


def test_the_document_is_truncated_first_then_the_query(minilm):
    _, tok = minilm
    q, d = pieces(tok, QUERIES[1]), pieces(tok, DOCS[1])
    assert len(d) > 20
    (ids, types), = tok.tokenize_pairs([QUERIES[1]], [DOCS[1]], max_length=20)
    assert len(ids) == 20
    assert ids.tolist() == [tok.cls_id, *q, tok.sep_id, *d[:20 - 3 - len(q)], tok.sep_id]
    assert int(types.sum()) == 20 - 2 - len(q)
    # a query longer than its budget is cut to query_max_length; the document keeps the rest
    (ids, types), = tok.tokenize_pairs([QUERIES[1]], [DOCS[1]], max_length=20, query_max_length=2)
    assert ids.tolist() == [tok.cls_id, *q[:2], tok.sep_id, *d[:15], tok.sep_id]
    # no budget: the query alone fills the pair, the document side keeps only its [SEP]
    (ids, types), = tok.tokenize_pairs([QUERIES[1] * 5], [DOCS[1]], max_length=10)
    assert ids.tolist()[-2:] == [tok.sep_id, tok.sep_id] and types.tolist()[-1] == 1
    with pytest.raises(ValueError, match="2 queries but 1 documents"):
        tok.tokenize_pairs(QUERIES[:2], DOCS[:1], max_length=32)


def test_cls_state_at_init_is_minilms_on_the_same_ids(minilm):
    checkpoint, tok = minilm
    scorer = CrossEncoderScorer.from_pretrained(max_length=64)
    pairs = tok.tokenize_pairs(QUERIES[:2], DOCS[:2], max_length=64)
    width = max(len(ids) for ids, _ in pairs)
    ids = np.zeros((2, width), np.int32)
    types, mask = np.zeros_like(ids), np.zeros_like(ids)
    for row, (i, t) in enumerate(pairs):
        ids[row, :len(i)], types[row, :len(t)], mask[row, :len(i)] = i, t, 1
    cls = scorer.module.apply({"params": scorer.params}, ids, mask, types,
                              method=CrossEncoder.cls_hidden)
    config = BertConfig.from_json(checkpoint.config_path)
    reference = BertEncoder(config).apply(
        {"params": load_bert_params(checkpoint.weights_path, config)}, ids, mask, types)[:, 0]
    np.testing.assert_allclose(np.asarray(cls), np.asarray(reference), atol=1e-6)
    # and the token types matter: the same ids as one segment give another [CLS] state
    flat = scorer.module.apply({"params": scorer.params}, ids, mask, np.zeros_like(types),
                               method=CrossEncoder.cls_hidden)
    assert np.abs(np.asarray(flat) - np.asarray(cls)).max() > 1e-3


def test_localized_contrastive_loss_matches_numpy():
    scores = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32) * 3
    loss, metrics = localized_contrastive_loss(jnp.asarray(scores))
    log_softmax = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(float(loss), -log_softmax[:, 0].mean(), rtol=1e-5)
    expected_acc = np.mean(scores[:, 0] > scores[:, 1:].max(axis=1))
    assert float(metrics["accuracy"]) == pytest.approx(expected_acc)
    np.testing.assert_allclose(float(metrics["margin"]),
                               np.mean(scores[:, 0] - scores[:, 1:].max(axis=1)), rtol=1e-5)
    with pytest.raises(ValueError, match=">= 1 negative"):
        localized_contrastive_loss(jnp.zeros((3, 1)))


def test_model_loss_is_lce_of_the_scorers_pair_scores(minilm):
    _, tok = minilm
    scorer = CrossEncoderScorer.from_pretrained(max_length=48, micro_batch_tokens=None)
    model = CrossEncoderModel(scorer.config, dropout=False)
    groups = [(QUERIES[0], [DOCS[0], DOCS[2], DOCS[3]]), (QUERIES[4], [DOCS[3], DOCS[0], DOCS[4]])]
    arrays = {k: np.zeros((2, 3, 48), np.int32) for k in ("pair_ids", "pair_types", "pair_mask")}
    for g, (query, docs) in enumerate(groups):
        for j, (ids, types) in enumerate(tok.tokenize_pairs([query] * 3, docs, 48)):
            arrays["pair_ids"][g, j, :len(ids)] = ids
            arrays["pair_types"][g, j, :len(ids)] = types
            arrays["pair_mask"][g, j, :len(ids)] = 1
    loss, metrics = model.loss(scorer.params, arrays, jax.random.key(0))
    pair_scores = np.stack([scorer.score_pairs([q] * 3, docs) for q, docs in groups])
    reference, _ = localized_contrastive_loss(jnp.asarray(pair_scores))
    np.testing.assert_allclose(float(loss), float(reference), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["positive_score"]), pair_scores[:, 0].mean(), rtol=1e-5)


def test_bucketed_scores_equal_unbucketed_and_costs_count_padded_widths():
    bucketed = CrossEncoderScorer.from_pretrained(max_length=64, batch_size=2, bucket_multiple=8)
    whole = CrossEncoderScorer(bucketed.module, bucketed.params, bucketed.tokenizer, name="whole",
                               max_length=64, batch_size=8, bucket_multiple=64,
                               micro_batch_tokens=None)
    a = bucketed.score_pairs(QUERIES, DOCS)
    b = whole.score_pairs(QUERIES, DOCS)
    assert a.shape == (5,) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.ptp(a) > 1e-4  # the head is live: different pairs, different scores
    assert whole.costs == {"flops": 5 * pair_flops(whole.config, 64)}
    assert bucketed.costs["flops"] < whole.costs["flops"]
    assert bucketed.score_pairs([], []).shape == (0,)


def test_save_and_load_round_trip(tmp_path):
    scorer = CrossEncoderScorer.from_pretrained(max_length=48, query_max_length=16, seed=3)
    saved = scorer.save(tmp_path / "ce")
    loaded = CrossEncoderScorer.load(saved, batch_size=scorer.batch_size)
    assert (loaded.max_length, loaded.query_max_length) == (48, 16)
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(scorer.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(loaded.score_pairs(QUERIES, DOCS), scorer.score_pairs(QUERIES, DOCS))
    with pytest.raises(MissingFileError, match="lacks config.json"):
        CrossEncoderScorer.load(tmp_path)
    (saved / "config.json").write_text((saved / "config.json").read_text().replace(
        '"num_hidden_layers": 6', '"num_hidden_layers": 5'))
    with pytest.raises(InputFileError, match="does not match"):
        CrossEncoderScorer.load(saved)


def test_sliced_scoring_gives_the_same_loss_and_gradients():
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=24)
    rng = np.random.default_rng(0)
    batch = {"pair_ids": rng.integers(4, 64, (2, 3, 8)).astype(np.int32),
             "pair_types": np.repeat(np.array([0] * 4 + [1] * 4, np.int32)[None, None], 6, 1)
             .reshape(2, 3, 8),
             "pair_mask": np.ones((2, 3, 8), np.int32)}
    batch["pair_mask"][:, :, 6:] = 0
    whole = CrossEncoderModel(config, dropout=False)
    sliced = CrossEncoderModel(config, dropout=False,
                               efficiency=EncoderEfficiency(grad_cache_tokens=16))  # 2 rows a slice
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x,
                          whole.init_variables(jax.random.key(0), batch),
                          is_leaf=lambda x: hasattr(x, "value"))
    grad = lambda model: jax.value_and_grad(  # noqa: E731
        lambda p: model.loss(p, batch, jax.random.key(1))[0])(params)
    (loss_a, grads_a), (loss_b, grads_b) = grad(whole), grad(sliced)
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
