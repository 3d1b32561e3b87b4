"""BEBR's binariser: the JAX model's signs are the index's numpy bits, its similarity is the
index's round-weighted Hamming score, and the straight-through estimator passes gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.index.bebr_index import binarize, round_scores
from irjax.models.bebr import BEBRModel, sign_ste

D, B, NEG = 24, 4, 2


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    unit = lambda *s: (lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True))(
        rng.standard_normal(s).astype(np.float32))
    batch = dict(query_vectors=unit(B, D), pos_vectors=unit(B, D), neg_vectors=unit(B, NEG, D),
                 labels=np.arange(B, dtype=np.int32), logit_mask=np.ones((B, B * (1 + NEG)), bool))
    model = BEBRModel(D, rounds=3, bits_per_round=16)
    params = model.init_variables(jax.random.key(0), batch)
    return model, params, batch


def test_model_bits_and_scores_match_the_index(setup):
    model, params, batch = setup
    weights = model.export(params)
    x = np.concatenate([batch["query_vectors"], batch["pos_vectors"]])
    signs, rec = model.binarize(params, jnp.asarray(x))
    bits, rec_np = binarize(x, weights)
    unpacked = np.unpackbits(bits, axis=1).reshape(len(x), 3, 16).transpose(1, 0, 2)
    np.testing.assert_array_equal(np.asarray(signs) > 0, unpacked.astype(bool))
    np.testing.assert_allclose(np.asarray(rec), rec_np, rtol=1e-4, atol=1e-5)
    sim = model.similarity(params, signs[:, :B], signs[:, B:])
    np.testing.assert_allclose(np.asarray(sim), round_scores(bits[:B], bits[B:],
                                                             weights["round_weights"]), rtol=1e-5)
    assert model.bytes_per_doc == 3 * 16 // 8 == bits.shape[1]


def test_gradient_flows_through_the_signs(setup):
    model, params, batch = setup
    grads = jax.grad(lambda p: model.loss(p, batch, jax.random.key(0))[0])(params)
    for key in ("enc_w", "dec_w", "round_logits"):
        assert float(jnp.abs(grads[key]).sum()) > 0, key
    g = jax.grad(lambda h: jnp.sum(sign_ste(h) * jnp.array([1.0, 2.0, 3.0])))(jnp.array([0.5, -3.0, 0.0]))
    np.testing.assert_array_equal(np.asarray(g), [1.0, 0.0, 3.0])  # hard-tanh window
    np.testing.assert_array_equal(np.asarray(sign_ste(jnp.array([0.5, -3.0, 0.0]))), [1, -1, -1])


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="multiple of 8"):
        BEBRModel(D, bits_per_round=12)
    with pytest.raises(ValueError, match="temperature"):
        BEBRModel(D, temperature=0.0)


def _log_softmax(x):
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def test_loss_against_numpy(setup):
    _, params, batch = setup
    model = BEBRModel(D, rounds=3, bits_per_round=16, reconstruction_weight=0.5,
                      distill_weight=2.0, corpus_weight=3.0)
    batch = {**batch, "corpus_vectors": batch["neg_vectors"][::-1]}  # [B, 2, D]: 8 rows
    weights = model.export(params)
    q, c = batch["query_vectors"], batch["corpus_vectors"].reshape(-1, D)
    d = np.concatenate([batch["pos_vectors"], batch["neg_vectors"].reshape(B * NEG, D)])
    (q_bits, q_rec), (d_bits, d_rec), (c_bits, c_rec) = (binarize(x, weights) for x in (q, d, c))
    log_p = _log_softmax(round_scores(q_bits, d_bits, weights["round_weights"]) / model.temperature)
    teacher = np.exp(_log_softmax(q @ d.T / model.temperature))
    ce = -np.mean(log_p[np.arange(B), np.arange(B)])
    distill = -np.mean((teacher * log_p).sum(1))
    off = ~np.eye(len(c), dtype=bool)
    student_c = np.where(off, round_scores(c_bits, c_bits, weights["round_weights"]), -1e9)
    teacher_c = np.exp(_log_softmax(np.where(off, c @ c.T / model.temperature, -1e9)))
    corpus_loss = -np.mean((teacher_c * _log_softmax(student_c / model.temperature)).sum(1))
    mse = np.mean(np.sum(np.concatenate([q - q_rec, d - d_rec, c - c_rec]) ** 2, axis=1))
    loss, metrics = model.loss(params, batch, jax.random.key(0))
    np.testing.assert_allclose(float(metrics["contrastive_loss"]), ce, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["distill_loss"]), distill, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["corpus_distill_loss"]), corpus_loss, rtol=1e-4)
    np.testing.assert_allclose(float(loss), ce + 0.5 * mse + 2.0 * distill + 3.0 * corpus_loss,
                               rtol=1e-4)
