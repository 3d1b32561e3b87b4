"""The dual-encoder training loss against a direct numpy computation on tiny tensors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.bert import BertConfig
from irjax.models.dual_encoder_training import DualEncoderModel
from irjax.models.efficiency import EncoderEfficiency

TINY = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=16)
B, N, LQ, LD = 4, 2, 5, 7


def make_batch(rng: np.random.Generator, teacher: bool = False) -> dict:
    def tokens(*shape):
        ids = rng.integers(1, TINY.vocab_size, size=shape).astype(np.int32)
        lengths = rng.integers(2, shape[-1] + 1, size=shape[:-1])
        mask = (np.arange(shape[-1]) < lengths[..., None]).astype(np.int32)
        return ids * mask, mask

    q, qm = tokens(B, LQ)
    p, pm = tokens(B, LD)
    n, nm = tokens(B, N, LD)
    logit_mask = np.ones((B, B * (1 + N)), bool)
    logit_mask[0, 2] = False  # row 2's positive is also relevant to query 0: not a negative
    batch = dict(query_ids=q, query_mask=qm, pos_ids=p, pos_mask=pm, neg_ids=n, neg_mask=nm,
                 labels=np.arange(B, dtype=np.int32), logit_mask=logit_mask)
    if teacher:
        batch["teacher_pos"] = rng.normal(size=B).astype(np.float32)
        batch["teacher_neg"] = rng.normal(size=(B, N)).astype(np.float32)
    return batch


def init_params(model, batch, seed):
    boxed = model.init_variables(jax.random.PRNGKey(seed), batch)
    return jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, boxed,
                        is_leaf=lambda x: hasattr(x, "names"))


def reference_losses(model, params, batch, local_rows=None):
    """Embeddings from the model; everything after them in numpy, written out long-hand."""
    q = np.asarray(model.embed(params, "query", batch["query_ids"], batch["query_mask"]))
    docs = [np.asarray(model.embed(params, "doc", batch["pos_ids"], batch["pos_mask"]))]
    for i in range(B):
        docs.append(np.asarray(model.embed(params, "doc", batch["neg_ids"][i], batch["neg_mask"][i])))
    d = np.concatenate(docs)  # [B positives, then negatives row-major]
    ce, mse = [], []
    for i in range(B):
        logits = []
        for j in range(d.shape[0]):
            owner = j if j < B else (j - B) // N
            allowed = batch["logit_mask"][i, j] and (local_rows is None or owner // local_rows == i // local_rows)
            if allowed:
                logits.append((q[i] @ d[j] / model.temperature, j))
        values = np.array([v for v, _ in logits])
        target = [v for v, j in logits if j == i][0]
        ce.append(np.log(np.exp(values).sum()) - target)
        if "teacher_pos" in batch:
            for k in range(N):
                student = q[i] @ d[i] - q[i] @ d[B + i * N + k]
                teacher = batch["teacher_pos"][i] - batch["teacher_neg"][i, k]
                mse.append((student - teacher) ** 2)
    return float(np.mean(ce)), (float(np.mean(mse)) if mse else None)


@pytest.mark.parametrize("shared", [True, False])
def test_contrastive_loss_matches_numpy(shared):
    model = DualEncoderModel(TINY, temperature=0.1, shared_towers=shared, dropout=False)
    batch = make_batch(np.random.default_rng(0))
    params = init_params(model, batch, 0)
    assert set(params) == ({"encoder"} if shared else {"query_encoder", "doc_encoder"})
    loss, metrics = model.loss(params, {k: jnp.asarray(v) for k, v in batch.items()}, jax.random.PRNGKey(1))
    expected, _ = reference_losses(model, params, batch)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["contrastive_loss"]), expected, rtol=1e-5)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_local_negatives_and_margin_mse_match_numpy():
    model = DualEncoderModel(TINY, temperature=0.05, objective="contrastive+margin_mse",
                             negatives="local", data_shards=2, dropout=False)
    batch = make_batch(np.random.default_rng(1), teacher=True)
    params = init_params(model, batch, 2)
    loss, metrics = model.loss(params, {k: jnp.asarray(v) for k, v in batch.items()}, jax.random.PRNGKey(3))
    ce, mse = reference_losses(model, params, batch, local_rows=B // 2)
    np.testing.assert_allclose(float(metrics["contrastive_loss"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["margin_mse"]), mse, rtol=1e-5)
    np.testing.assert_allclose(float(loss), ce + mse, rtol=1e-5)


def test_global_pool_differs_from_local_pool():
    """Cross-device negatives matter: the global pool gives a larger loss than the local one."""
    batch = make_batch(np.random.default_rng(4))
    base = DualEncoderModel(TINY, dropout=False)
    params = init_params(base, batch, 5)
    arrays = {k: jnp.asarray(v) for k, v in batch.items()}
    global_loss, _ = base.loss(params, arrays, jax.random.PRNGKey(0))
    local = DualEncoderModel(TINY, negatives="local", data_shards=4, dropout=False)
    local_loss, _ = local.loss(params, arrays, jax.random.PRNGKey(0))
    assert float(global_loss) > float(local_loss)


def test_margin_mse_without_teacher_is_a_clear_error():
    model = DualEncoderModel(TINY, objective="margin_mse", dropout=False)
    batch = make_batch(np.random.default_rng(6))
    params = init_params(model, batch, 0)
    with pytest.raises(ValueError, match="teacher scores"):
        model.loss(params, {k: jnp.asarray(v) for k, v in batch.items()}, jax.random.PRNGKey(0))


def test_bad_settings_rejected():
    with pytest.raises(ValueError, match="objective"):
        DualEncoderModel(TINY, objective="triplet")
    with pytest.raises(ValueError, match="negatives"):
        DualEncoderModel(TINY, negatives="cross")


def grads_of(model, params, batch, rng):
    arrays = {k: jnp.asarray(v) for k, v in batch.items()}
    return jax.value_and_grad(lambda p: model.loss(p, arrays, rng)[0])(params)


def assert_same_loss_and_grads(model, reference, params, batch, rng):
    """`model` gives `reference`'s loss (rtol 1e-6) and gradients (1e-5); returns the gradients."""
    loss, grads = grads_of(reference, params, batch, rng)
    loss2, grads2 = grads_of(model, params, batch, rng)
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads2), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    return grads


@pytest.mark.parametrize("objective,shared", [("contrastive", True), ("contrastive+margin_mse", False)])
def test_grad_cache_gives_the_plain_loss_and_gradients(objective, shared):
    """Slices of 14 tokens: 2 query rows and 2 document rows per slice (2 and 6 slices)."""
    batch = make_batch(np.random.default_rng(7), teacher=True)
    plain = DualEncoderModel(TINY, objective=objective, shared_towers=shared, dropout=False)
    cached = DualEncoderModel(TINY, objective=objective, shared_towers=shared, dropout=False,
                              efficiency=EncoderEfficiency(grad_cache_tokens=14))
    params = init_params(plain, batch, 8)
    grads = assert_same_loss_and_grads(cached, plain, params, batch, jax.random.key(0))
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 1e-3  # not all zero


def test_grad_cache_with_dropout_is_the_textbook_two_pass_computation():
    """Gao et al.'s GradCache written out: embed every slice without gradients (each with its
    dropout key), take the loss's gradient with respect to the embeddings, then back-propagate each
    slice with its own embedding gradient and sum. The rematerialised model must agree, which
    also shows the backward pass re-draws the forward pass's dropout masks."""
    from irjax.models.dual_encoder import encode_batch

    batch = make_batch(np.random.default_rng(9))
    model = DualEncoderModel(TINY, temperature=0.1, efficiency=EncoderEfficiency(grad_cache_tokens=14))
    params = init_params(model, batch, 10)
    rng = jax.random.key(11)
    loss, grads = grads_of(model, params, batch, rng)
    no_dropout, _ = grads_of(dataclasses.replace(model, dropout=False), params, batch, rng)
    assert abs(float(loss) - float(no_dropout)) > 1e-4  # dropout is on

    tower = params["encoder"]
    docs_ids = np.concatenate([batch["pos_ids"], batch["neg_ids"].reshape(B * N, LD)])
    docs_mask = np.concatenate([batch["pos_mask"], batch["neg_mask"].reshape(B * N, LD)])
    q_rng, d_rng = jax.random.split(rng)
    sides = [(batch["query_ids"], batch["query_mask"], q_rng, 2), (docs_ids, docs_mask, d_rng, 2)]

    def embed_slice(p, ids, mask, key):
        return encode_batch(model.module, p, jnp.asarray(ids), jnp.asarray(mask),
                            deterministic=False, rngs={"dropout": key})

    slices = []  # (ids, mask, key) per slice, per side
    for ids, mask, side_rng, rows in sides:
        keys = jax.random.split(side_rng, len(ids) // rows)
        slices.append([(ids[i * rows:(i + 1) * rows], mask[i * rows:(i + 1) * rows], keys[i])
                       for i in range(len(ids) // rows)])
    q, d = (jnp.concatenate([embed_slice(tower, *s) for s in side]) for side in slices)

    def loss_of(q, d):
        logits = jnp.where(jnp.asarray(batch["logit_mask"]), q @ d.T / model.temperature, -1e9)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(B), batch["labels"]])

    expected_loss, (dq, dd) = jax.value_and_grad(loss_of, argnums=(0, 1))(q, d)
    expected = jax.tree.map(jnp.zeros_like, tower)
    for side, cotangent in zip(slices, (dq, dd)):
        rows = len(cotangent) // len(side)
        for i, s in enumerate(side):
            _, vjp = jax.vjp(lambda p: embed_slice(p, *s), tower)
            (g,) = vjp(cotangent[i * rows:(i + 1) * rows])
            expected = jax.tree.map(jnp.add, expected, g)
    np.testing.assert_allclose(float(loss), float(expected_loss), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads["encoder"]), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_efficiency_settings_are_checked():
    with pytest.raises(ValueError, match="grad_cache_tokens=0"):
        EncoderEfficiency(grad_cache_tokens=0)
    with pytest.raises(ValueError, match="attention='flash'"):
        EncoderEfficiency(attention="flash")


@pytest.mark.parametrize("attention,remat", [("fused", "none"), ("einsum", "full"), ("fused", "dots")])
def test_attention_and_remat_switches_give_the_reference_loss_and_gradients(attention, remat):
    """Dropout off: the fused attention path and per-layer remat compute the same function."""
    batch = make_batch(np.random.default_rng(12))
    plain = DualEncoderModel(TINY, dropout=False)
    switched = DualEncoderModel(TINY, dropout=False,
                                efficiency=EncoderEfficiency(attention=attention, remat=remat))
    params = init_params(plain, batch, 13)
    assert_same_loss_and_grads(switched, plain, params, batch, jax.random.key(0))


def test_remat_keeps_dropout_masks_in_the_backward_pass():
    """With dropout on, a rematerialised layer must re-draw the forward pass's masks: gradients
    equal the non-remat ones (a different mask would change them by far more than 1e-5)."""
    batch = make_batch(np.random.default_rng(14))
    plain = DualEncoderModel(TINY)
    remat = DualEncoderModel(TINY, efficiency=EncoderEfficiency(remat="full"))
    params = init_params(plain, batch, 15)
    assert_same_loss_and_grads(remat, plain, params, batch, jax.random.key(16))
