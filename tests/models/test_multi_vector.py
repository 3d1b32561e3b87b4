"""MaxSim and XTR scores, and the multi-vector training loss, against long-hand numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.bert import BertConfig
from irjax.models.multi_vector import MultiVectorModel, maxsim_scores, xtr_scores
from irjax.models.token_encoder import TokenEncoderModule, token_mask

TINY = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=16)


def unit_tokens(rng, *shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def masks(rng, rows, length, min_len=1):
    lengths = rng.integers(min_len, length + 1, size=rows)
    return (np.arange(length) < lengths[:, None]).astype(np.float32)


def ref_maxsim(q, qm, d, dm):
    out = np.zeros((q.shape[0], d.shape[0]))
    for a in range(q.shape[0]):
        for p in range(d.shape[0]):
            total, count = 0.0, 0
            for i in range(q.shape[1]):
                if not qm[a, i]:
                    continue
                count += 1
                sims = [q[a, i] @ d[p, j] for j in range(d.shape[1]) if dm[p, j]]
                total += max(sims) if sims else 0.0
            out[a, p] = total / max(count, 1)
    return out


def ref_xtr(q, qm, d, dm, k):
    out = np.zeros((q.shape[0], d.shape[0]))
    for a in range(q.shape[0]):
        kept = {}  # query token i -> {(doc, token): similarity} of its top-k over the whole batch
        for i in range(q.shape[1]):
            if qm[a, i]:
                pool = [(float(q[a, i] @ d[p, j]), p, j) for p in range(d.shape[0])
                        for j in range(d.shape[1]) if dm[p, j]]
                pool.sort(key=lambda t: -t[0])
                kept[i] = {(p, j): s for s, p, j in pool[:k]}
        for p in range(d.shape[0]):
            total, z = 0.0, 0
            for i, top in kept.items():
                if any(key[0] == p for key in top):
                    z += 1
                    total += max(top.get((p, j), 0.0) for j in range(d.shape[1]) if dm[p, j])
            out[a, p] = total / z if z else 0.0
    return out


@pytest.fixture
def tensors():
    rng = np.random.default_rng(0)
    q, d = unit_tokens(rng, 3, 4, 8), unit_tokens(rng, 5, 6, 8)
    qm, dm = masks(rng, 3, 4), masks(rng, 5, 6)
    dm[4] = 0.0  # a document that is all padding
    return q, qm, d, dm


def test_maxsim_matches_loops(tensors):
    q, qm, d, dm = tensors
    got = np.asarray(maxsim_scores(q, qm, d, dm))
    np.testing.assert_allclose(got, ref_maxsim(q, qm, d, dm), atol=1e-5)
    assert np.all(got[:, 4] == 0.0)


@pytest.mark.parametrize("k", [1, 3, 7, 1000])
def test_xtr_matches_loops(tensors, k):
    q, qm, d, dm = tensors
    got = np.asarray(xtr_scores(q, qm, d, dm, k))
    np.testing.assert_allclose(got, ref_xtr(q, qm, d, dm, k), atol=1e-5)


def test_xtr_small_k_differs_from_maxsim_and_guards_z(tensors):
    q, qm, d, dm = tensors
    got = np.asarray(xtr_scores(q, qm, d, dm, 1))
    # with k=1 each query token retrieves one doc token: most (query, doc) pairs get Z=0 -> 0
    assert np.isfinite(got).all()
    assert (got == 0.0).sum() >= got.size // 2
    assert not np.allclose(got, np.asarray(maxsim_scores(q, qm, d, dm)))


def test_xtr_with_all_tokens_kept_equals_maxsim(tensors):
    q, qm, d, dm = tensors
    total_tokens = d.shape[0] * d.shape[1]
    np.testing.assert_allclose(np.asarray(xtr_scores(q, qm, d, dm, total_tokens)),
                               np.asarray(maxsim_scores(q, qm, d, dm)), atol=1e-6)


def test_token_mask_drops_padding_and_skip_ids():
    ids = np.array([[5, 7, 9, 0], [7, 7, 3, 4]], np.int32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.int32)
    got = np.asarray(token_mask(ids, mask, skip_ids=[7, 4]))
    np.testing.assert_array_equal(got, [[1, 0, 1, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(np.asarray(token_mask(ids, mask)), mask)


def test_token_encoder_outputs_unit_vectors_with_named_projection():
    ids = jnp.array([[3, 4, 5]], jnp.int32)
    mask = jnp.ones_like(ids)
    module = TokenEncoderModule(TINY, dim=6)
    variables = module.init(jax.random.PRNGKey(0), ids, mask)
    assert variables["params"]["projection"]["kernel"].names == ("embed", "kv")
    out = module.apply(jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, variables,
                                    is_leaf=lambda x: hasattr(x, "names")), ids, mask)
    assert out.shape == (1, 3, 6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=-1), 1.0, atol=1e-5)


def make_batch(rng, b=3, n=1, lq=4, ld=5):
    def tokens(*shape):
        ids = rng.integers(1, TINY.vocab_size, size=shape).astype(np.int32)
        lengths = rng.integers(2, shape[-1] + 1, size=shape[:-1])
        mask = (np.arange(shape[-1]) < lengths[..., None]).astype(np.int32)
        return ids * mask, mask

    q, qm = tokens(b, lq)
    p, pm = tokens(b, ld)
    ng, nm = tokens(b, n, ld)
    logit_mask = np.ones((b, b * (1 + n)), bool)
    logit_mask[0, 1] = False
    return dict(query_ids=q, query_mask=qm, pos_ids=p, pos_mask=pm, neg_ids=ng, neg_mask=nm,
                labels=np.arange(b, dtype=np.int32), logit_mask=logit_mask)


@pytest.mark.parametrize("objective", ["xtr", "colbert"])
def test_loss_matches_numpy_cross_entropy_and_grads_finite(objective):
    batch = make_batch(np.random.default_rng(1))
    model = MultiVectorModel(TINY, dim=8, objective=objective, k_train=6, temperature=0.1,
                             doc_skip_ids=(7,), dropout=False)
    boxed = model.init_variables(jax.random.PRNGKey(0), batch)
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, boxed,
                          is_leaf=lambda x: hasattr(x, "names"))
    # one jitted call for loss and gradients: eager op-by-op dispatch is several times slower
    value_and_grad = jax.jit(jax.value_and_grad(model.loss, has_aux=True))
    (loss, metrics), grads = value_and_grad(params, batch, jax.random.PRNGKey(1))

    # scores from the model's own vectors, recomputed long-hand
    q = np.asarray(model.encode(params, batch["query_ids"], batch["query_mask"]))
    d_ids = np.concatenate([batch["pos_ids"], batch["neg_ids"].reshape(-1, 5)])
    d_mask = np.concatenate([batch["pos_mask"], batch["neg_mask"].reshape(-1, 5)])
    d = np.asarray(model.encode(params, d_ids, d_mask))
    dm = d_mask * (d_ids != 7)
    ref = (ref_xtr(q, batch["query_mask"], d, dm, 6) if objective == "xtr"
           else ref_maxsim(q, batch["query_mask"], d, dm))
    np.testing.assert_allclose(np.asarray(jax.jit(model.scores)(params, batch)), ref, atol=1e-5)

    ce = []
    for i in range(3):
        logits = [ref[i, j] / 0.1 for j in range(ref.shape[1]) if batch["logit_mask"][i, j]]
        ce.append(np.log(np.sum(np.exp(logits))) - ref[i, i] / 0.1)
    np.testing.assert_allclose(float(loss), np.mean(ce), rtol=1e-4)
    assert float(metrics["loss"]) == float(loss)

    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert np.abs(np.asarray(grads["encoder"]["projection"]["kernel"])).sum() > 0


def test_from_pretrained_params_fills_only_the_backbone():
    from irjax.training.train_state import merge_params

    batch = make_batch(np.random.default_rng(2))
    model = MultiVectorModel(TINY, dim=8)
    unbox = lambda t: jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, t,
                                   is_leaf=lambda x: hasattr(x, "names"))
    fresh = unbox(model.init_variables(jax.random.PRNGKey(0), batch))
    other = unbox(model.init_variables(jax.random.PRNGKey(5), batch))
    merged = merge_params(fresh, model.from_pretrained_params(other["encoder"]["backbone"]))
    for a, b in zip(jax.tree.leaves(merged["encoder"]["backbone"]),
                    jax.tree.leaves(other["encoder"]["backbone"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(merged["encoder"]["projection"]["kernel"]),
                                  np.asarray(fresh["encoder"]["projection"]["kernel"]))
