"""JPQ's model: the loss against numpy on reconstructed documents, and where its gradient goes
(query tower and centroids; the integer document codes get none and stay as they were)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irjax.models.bert import BertConfig
from irjax.models.jpq import JPQModel, reconstruct

TINY = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=16)
B, N, LQ, M = 4, 2, 5, 4


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, TINY.vocab_size, size=(B, LQ)).astype(np.int32)
    mask = np.ones((B, LQ), np.int32)
    mask[1, 3:] = 0
    logit_mask = np.ones((B, B * (1 + N)), bool)
    logit_mask[0, 2] = False
    batch = dict(query_ids=ids * mask, query_mask=mask,
                 pos_codes=rng.integers(0, 256, size=(B, M)).astype(np.int32),
                 neg_codes=rng.integers(0, 256, size=(B, N, M)).astype(np.int32),
                 labels=np.arange(B, dtype=np.int32), logit_mask=logit_mask)
    model = JPQModel(TINY, pq_subspaces=M, dropout=False)
    params = model.init_variables(jax.random.key(0), batch)
    params["centroids"] = jnp.asarray(rng.normal(size=model.centroid_shape).astype(np.float32))
    return model, params, batch


def test_loss_is_cross_entropy_over_reconstructed_documents(setup):
    model, params, batch = setup
    q = np.asarray(model.embed_queries(params, batch["query_ids"], batch["query_mask"]))
    c = np.asarray(params["centroids"])
    codes = np.concatenate([batch["pos_codes"], batch["neg_codes"].reshape(B * N, M)])
    docs = np.stack([np.concatenate([c[j, row[j]] for j in range(M)]) for row in codes])
    expected = []
    for i in range(B):
        logits = np.array([q[i] @ docs[j] / model.temperature for j in range(len(docs))
                           if batch["logit_mask"][i, j]])
        target = q[i] @ docs[i] / model.temperature
        expected.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - target)
    loss, _ = model.loss(params, batch, jax.random.key(1))
    np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-5)


def test_gradient_reaches_query_tower_and_used_centroids_only(setup):
    model, params, batch = setup
    assert set(params) == {"query_encoder", "centroids"}  # no document tower to train
    grads = jax.grad(lambda p: model.loss(p, batch, jax.random.key(1))[0])(params)
    encoder_norm = optax.tree.norm(grads["query_encoder"])
    assert float(encoder_norm) > 0
    used = np.zeros((M, 256), bool)
    codes = np.concatenate([batch["pos_codes"], batch["neg_codes"].reshape(B * N, M)])
    for j in range(M):
        used[j, codes[:, j]] = True
    norms = np.linalg.norm(np.asarray(grads["centroids"]), axis=-1)
    assert (norms[used] > 0).all() and (norms[~used] == 0).all()


def test_codes_are_integers_unchanged_by_a_step(setup):
    model, params, batch = setup
    before = {k: np.array(v) for k, v in batch.items()}
    tx = optax.adamw(1e-2)
    state = tx.init(params)
    grads = jax.grad(lambda p: model.loss(p, batch, jax.random.key(1))[0])(params)
    updates, _ = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    assert batch["pos_codes"].dtype.kind == "i"
    for key in ("pos_codes", "neg_codes"):
        np.testing.assert_array_equal(batch[key], before[key])
    assert not np.allclose(np.asarray(new["centroids"]), np.asarray(params["centroids"]))
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                                           new["query_encoder"], params["query_encoder"]))
    assert any(changed)


def test_reconstruct_gathers_one_centroid_per_subspace():
    centroids = jnp.arange(2 * 256 * 3, dtype=jnp.float32).reshape(2, 256, 3)
    out = reconstruct(centroids, jnp.array([[5, 7]]))
    np.testing.assert_array_equal(np.asarray(out)[0], np.concatenate([centroids[0, 5], centroids[1, 7]]))


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="must divide"):
        JPQModel(TINY, pq_subspaces=5)
    with pytest.raises(ValueError, match="temperature"):
        JPQModel(TINY, pq_subspaces=4, temperature=0.0)
