"""SPLADE: pooling and head against a numpy re-computation, FLOPS / IDF-FLOPS against hand
arithmetic, the MLM-head import (synthetic and against transformers' stored vectors of the real
SPLADE-tiny), and the training loss's pieces."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.splade import SpladeEncoder, flops, idf_flops, lambda_schedule, splade_pool
from irjax.models.splade_import import convert_mlm_state_dict, find_weights, load_splade_params
from irjax.models.splade_training import SpladeModel, idf_query_vectors
from irjax.models.pretrained import MissingWeightsError
from irjax.models.weight_import import CheckpointMismatchError
from tests.models.test_hf_import import hf_state

TINY = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=16, max_position_embeddings=16)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "splade_tiny_reference.npz"


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _layer_norm(x, scale, bias, eps):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def test_encoder_is_bert_then_tied_mlm_head_then_masked_max_log1p_relu():
    ids = np.array([[2, 7, 9, 3], [2, 11, 3, 0]], np.int32)
    mask = (ids > 0).astype(np.int32)
    module = SpladeEncoder(TINY)
    params = nn_unbox(module.init(jax.random.key(0), ids, mask)["params"])
    params["mlm_head"]["bias"] = np.linspace(-1, 1, TINY.vocab_size).astype(np.float32)
    got = np.asarray(module.apply({"params": params}, ids, mask))

    hidden = np.asarray(BertEncoder(TINY).apply({"params": params["encoder"]}, ids, mask))
    head = params["mlm_head"]
    h = _gelu(hidden @ head["transform"]["kernel"] + head["transform"]["bias"])
    h = _layer_norm(h, head["transform_norm"]["scale"], head["transform_norm"]["bias"],
                    TINY.layer_norm_eps)
    logits = h @ params["encoder"]["embeddings"]["word_embeddings"]["embedding"].T + head["bias"]
    expected = np.max(np.log1p(np.maximum(logits, 0)) * mask[:, :, None], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (got >= 0).all() and got.shape == (2, TINY.vocab_size)


def nn_unbox(tree):
    import flax.linen as nn
    return jax.tree.map(np.asarray, nn.meta.unbox(tree))


def test_padding_never_contributes():
    logits = jnp.array([[[1.0, -2.0], [5.0, 9.0]]])   # the second position is padding
    pooled = splade_pool(logits, jnp.array([[1, 0]]))
    np.testing.assert_allclose(pooled, [[np.log(2.0), 0.0]], rtol=1e-6)


def test_flops_and_idf_flops_match_hand_computation():
    w = jnp.array([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    # column means 2, 0, 1 -> FLOPS 2^2 + 0 + 1^2
    assert float(flops(w)) == pytest.approx(5.0)
    # IDF 1, 2, 3 -> (1*2)^2 + (2*0)^2 + (3*1)^2
    assert float(idf_flops(w, jnp.array([1.0, 2.0, 3.0]))) == pytest.approx(13.0)
    grad = jax.grad(lambda x: idf_flops(x, jnp.array([1.0, 2.0, 3.0])))(w)
    # d/dw_ij = 2 idf_j^2 mean_j / N
    np.testing.assert_allclose(grad[0], [2 * 1 * 2 / 2, 0.0, 2 * 9 * 1 / 2], rtol=1e-6)


def test_lambda_warmup_is_quadratic_then_flat():
    assert float(lambda_schedule(jnp.asarray(5), 0.4, 10)) == pytest.approx(0.4 * 0.25)
    assert float(lambda_schedule(jnp.asarray(30), 0.4, 10)) == pytest.approx(0.4)
    assert float(lambda_schedule(jnp.asarray(0), 0.4, 0)) == pytest.approx(0.4)


def test_idf_queries_weight_distinct_tokens_and_skip_specials():
    ids = jnp.array([[101, 5, 7, 5, 102, 0]])
    mask = jnp.array([[1, 1, 1, 1, 1, 0]])
    idf = jnp.arange(200, dtype=jnp.float32) / 10
    q = np.asarray(idf_query_vectors(ids, mask, idf, (101, 102, 0)))
    expected = np.zeros(200, np.float32)
    expected[[5, 7]] = [0.5, 0.7]
    np.testing.assert_allclose(q[0], expected, rtol=1e-6)


def _mlm_state(config: BertConfig, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = hf_state(config, prefix="bert.")
    d, v = config.hidden_size, config.vocab_size
    state.update({
        "cls.predictions.transform.dense.weight": rng.normal(size=(d, d)).astype(np.float32),
        "cls.predictions.transform.dense.bias": rng.normal(size=d).astype(np.float32),
        "cls.predictions.transform.LayerNorm.weight": rng.normal(size=d).astype(np.float32),
        "cls.predictions.transform.LayerNorm.bias": rng.normal(size=d).astype(np.float32),
        "cls.predictions.bias": rng.normal(size=v).astype(np.float32),
    })
    return state


def test_mlm_head_import_maps_and_transposes():
    state = _mlm_state(TINY)
    params = convert_mlm_state_dict(state, TINY)
    head = params["mlm_head"]
    np.testing.assert_array_equal(head["transform"]["kernel"],
                                  state["cls.predictions.transform.dense.weight"].T)
    np.testing.assert_array_equal(head["bias"], state["cls.predictions.bias"])
    untied = dict(state, **{"cls.predictions.decoder.weight": state[
        "bert.embeddings.word_embeddings.weight"] + 1})
    with pytest.raises(CheckpointMismatchError, match="tied"):
        convert_mlm_state_dict(untied, TINY)


def test_checkpoint_without_head_needs_fresh_head_which_starts_as_identity():
    state = hf_state(TINY)
    with pytest.raises(CheckpointMismatchError, match="fresh_head"):
        convert_mlm_state_dict(state, TINY)
    head = convert_mlm_state_dict(state, TINY, fresh_head=True)["mlm_head"]
    np.testing.assert_array_equal(head["transform"]["kernel"], np.eye(TINY.hidden_size))
    assert not head["bias"].any()


def test_fresh_head_bias_keeps_the_terms_whose_max_logit_clears_it():
    """A negative fresh_head_bias b sparsifies a fresh head's vectors: a term survives exactly
    when its zero-bias max logit m exceeds -b, with weight log1p(m + b)."""
    state = hf_state(TINY)
    ids = np.array([[2, 7, 9, 3], [2, 11, 3, 0]], np.int32)
    mask = (ids > 0).astype(np.int32)
    module = SpladeEncoder(TINY)
    lift = 10.0  # a bias that puts every term above zero, so each max logit can be read back
    lifted = np.asarray(module.apply(
        {"params": convert_mlm_state_dict(state, TINY, fresh_head=True, fresh_head_bias=lift)},
        ids, mask))
    assert (lifted > 0).all()
    max_logit = np.expm1(lifted.astype(np.float64)) - lift
    b = -float(np.median(max_logit))
    params = convert_mlm_state_dict(state, TINY, fresh_head=True, fresh_head_bias=b)
    assert (params["mlm_head"]["bias"] == np.float32(b)).all()
    got = np.asarray(module.apply({"params": params}, ids, mask))
    expected = np.log1p(np.maximum(max_logit + np.float32(b), 0))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert 0 < (got > 0).sum() < got.size
    with pytest.raises(CheckpointMismatchError, match="fresh_head_bias"):
        convert_mlm_state_dict(_mlm_state(TINY), TINY, fresh_head_bias=b)


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="python tools/fetch_weights.py splade-tiny"):
        find_weights("splade-tiny")


def test_loss_is_contrastive_plus_lambda_flops():
    model = SpladeModel(TINY, lambda_q=0.3, lambda_d=0.1, dropout=False, special_ids=(2, 3, 0))
    ids = np.array([[2, 5, 6, 3], [2, 9, 3, 0]], np.int32)
    batch = {"query_ids": ids, "query_mask": (ids > 0).astype(np.int32),
             "pos_ids": ids[::-1].copy(), "pos_mask": (ids[::-1] > 0).astype(np.int32),
             "labels": np.arange(2, dtype=np.int32)}
    params = nn_unbox(model.init_variables(jax.random.key(0), batch))
    loss, metrics = jax.jit(model.loss)(params, batch, jax.random.key(1))
    q = np.asarray(model.encode(params, ids, batch["query_mask"]))
    d = np.asarray(model.encode(params, batch["pos_ids"], batch["pos_mask"]))
    s = np.asarray(q @ d.T)
    ce = np.mean(np.log(np.exp(s).sum(1)) - np.diag(s))
    expected = ce + 0.1 * np.sum(np.mean(d, 0) ** 2) + 0.3 * np.sum(np.mean(q, 0) ** 2)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["contrastive_loss"]) == pytest.approx(ce, rel=1e-5)

    idf = np.linspace(0.5, 3, TINY.vocab_size).astype(np.float32)
    free = SpladeModel(TINY, query_side="idf", idf=idf, lambda_d=0.1, dropout=False,
                       special_ids=(2, 3, 0))
    grads, m = jax.jit(jax.grad(free.loss, has_aux=True))(params, batch, jax.random.key(1))
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert float(m["query_flops"]) == 0.0
    assert float(m["doc_flops"]) == pytest.approx(float(np.sum((idf * np.mean(d, 0)) ** 2)), rel=1e-5)


def test_real_splade_tiny_matches_transformers_vectors():
    try:
        directory = find_weights("splade-tiny")
    except MissingWeightsError as e:
        pytest.skip(str(e))
    from irjax.data.tokenization import WordPieceTokenizer

    ref = np.load(FIXTURE)
    config, params = load_splade_params(directory)
    batch = WordPieceTokenizer(directory).encode(list(ref["texts"]), 128)
    np.testing.assert_array_equal(batch.ids, ref["input_ids"])
    got = np.asarray(SpladeEncoder(config).apply({"params": params}, batch.ids, batch.mask))
    expected = np.zeros_like(got)
    expected[ref["rows"], ref["terms"]] = ref["weights"]
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert ((got > 0) == (expected > 0)).all()
