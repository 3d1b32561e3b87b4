"""AR2's retriever loss against a numpy reference: KL(ranker softmax || retriever softmax) per
group, no gradient into the ranker's scores, and the gradient of a numpy finite difference."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from irjax.models.ar2 import ar2_retriever_loss


def reference_kl(retriever: np.ndarray, ranker: np.ndarray) -> float:
    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    p, log_p, log_q = np.exp(log_softmax(ranker)), log_softmax(ranker), log_softmax(retriever)
    return float(np.mean(np.sum(p * (log_p - log_q), axis=1)))


def test_retriever_loss_matches_numpy_kl_and_ignores_the_ranker_gradient() -> None:
    rng = np.random.default_rng(0)
    retriever = rng.normal(size=(5, 4)) * 3
    ranker = rng.normal(size=(5, 4)) * 2
    loss, metrics = ar2_retriever_loss(jnp.asarray(retriever), jnp.asarray(ranker))
    assert abs(float(loss) - reference_kl(retriever, ranker)) < 1e-5
    agree = np.mean(retriever.argmax(1) == ranker.argmax(1))
    assert abs(float(metrics["top1_agreement"]) - agree) < 1e-6
    # equal distributions: zero loss, whatever the offset (softmax is shift-invariant)
    same, _ = ar2_retriever_loss(jnp.asarray(ranker + 7.0), jnp.asarray(ranker))
    assert abs(float(same)) < 1e-5

    grad_ret, grad_rank = jax.grad(lambda r, k: ar2_retriever_loss(r, k)[0], argnums=(0, 1))(
        jnp.asarray(retriever, jnp.float32), jnp.asarray(ranker, jnp.float32))
    assert not np.any(np.asarray(grad_rank))  # the ranker is the fixed target
    eps, i, j = 1e-3, 2, 1
    bumped = retriever.copy()
    bumped[i, j] += eps
    lowered = retriever.copy()
    lowered[i, j] -= eps
    numeric = (reference_kl(bumped, ranker) - reference_kl(lowered, ranker)) / (2 * eps)
    assert abs(float(grad_ret[i, j]) - numeric) < 1e-3
    # d KL / d logits = (softmax(retriever) - softmax(ranker)) / rows
    expected = (jax.nn.softmax(retriever, 1) - jax.nn.softmax(ranker, 1)) / len(retriever)
    np.testing.assert_allclose(np.asarray(grad_ret), np.asarray(expected), atol=1e-5)


def test_sliced_step_has_the_loss_and_gradients_of_the_plain_step() -> None:
    import dataclasses

    from irjax.models.ar2 import AR2Model
    from irjax.models.bert import BertConfig
    from irjax.models.cross_encoder_training import CrossEncoderModel
    from irjax.models.dual_encoder_training import DualEncoderModel
    from irjax.models.efficiency import EncoderEfficiency

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=32)
    rng = np.random.default_rng(1)
    b, n, length = 4, 2, 8
    ids = lambda *shape: jnp.asarray(rng.integers(1, 64, size=shape), jnp.int32)  # noqa: E731
    batch = {"query_ids": ids(b, 6), "query_mask": jnp.ones((b, 6), jnp.int32),
             "pos_ids": ids(b, length), "pos_mask": jnp.ones((b, length), jnp.int32),
             "neg_ids": ids(b, n, length), "neg_mask": jnp.ones((b, n, length), jnp.int32),
             "labels": jnp.arange(b, dtype=jnp.int32),
             "logit_mask": jnp.ones((b, b * (1 + n)), bool),
             "pair_ids": ids(b, 1 + n, length), "pair_mask": jnp.ones((b, 1 + n, length), jnp.int32),
             "pair_types": jnp.zeros((b, 1 + n, length), jnp.int32)}
    plain = AR2Model(DualEncoderModel(config, dropout=False), CrossEncoderModel(config, dropout=False))
    sliced = dataclasses.replace(plain, retriever=dataclasses.replace(
        plain.retriever, efficiency=EncoderEfficiency(grad_cache_tokens=16)))
    params = plain.init_variables(jax.random.key(0), batch)
    key = jax.random.key(3)
    (loss_a, metrics_a), grads_a = jax.value_and_grad(plain.loss, has_aux=True)(params, batch, key)
    (loss_b, metrics_b), grads_b = jax.value_and_grad(sliced.loss, has_aux=True)(params, batch, key)
    assert abs(float(loss_a) - float(loss_b)) < 1e-5
    assert abs(float(metrics_a["kl"]) - float(metrics_b["kl"])) < 1e-5
    for a, c in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4, atol=1e-4)
