"""make_optimizer: the schedule (and that updates follow it), clipping, gradient accumulation
equal to a k-times-larger batch, and weight decay only on matrices."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irjax.training.optimizer import OptimizerConfig, decay_mask, learning_rate_at, make_optimizer


def cosine_at(step, peak, warmup, total, end):
    frac = (step - warmup) / (total - warmup)
    return peak * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * frac)))


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_schedule_warms_up_linearly_then_decays(decay):
    config = OptimizerConfig(learning_rate=2.0, num_steps=10, warmup_steps=4, decay=decay,
                             end_learning_rate_fraction=0.1)
    at = config.learning_rate_at
    assert [at(0), at(1), at(2), at(4)] == pytest.approx([0.0, 0.5, 1.0, 2.0])
    expected = {"cosine": [cosine_at(s, 2.0, 4, 10, 0.1) for s in (5, 7, 10)] + [0.2],
                "linear": [2.0 - 1.8 * (s - 4) / 6 for s in (5, 7, 10)] + [0.2],
                "constant": [2.0, 2.0, 2.0, 2.0]}[decay]
    assert [at(5), at(7), at(10), at(30)] == pytest.approx(expected, rel=1e-6)
    assert learning_rate_at(7, config) == at(7)


def test_updates_follow_the_schedule():
    """With b1 = b2 = 0 Adam's step is lr * g / |g|: each update reads off the rate used."""
    config = OptimizerConfig(learning_rate=1.0, num_steps=6, warmup_steps=2, b1=0.0, b2=0.0,
                             eps=1e-12, clip_norm=None)
    tx, params = config.build(), {"w": jnp.zeros(3)}
    state, seen = tx.init(params), []
    for _ in range(7):
        updates, state = tx.update({"w": jnp.ones(3)}, state, params)
        seen.append(-float(updates["w"][0]))
    assert seen == pytest.approx([config.learning_rate_at(s) for s in range(7)], abs=1e-6)
    assert seen[2] == pytest.approx(1.0) and seen[-1] == pytest.approx(0.0, abs=1e-6)


def test_accumulated_steps_use_the_rate_of_their_first_batch():
    config = OptimizerConfig(learning_rate=1.0, num_steps=12, warmup_steps=4, grad_accum_steps=2)
    assert config.learning_rate_at(2) == config.learning_rate_at(3) == pytest.approx(0.5)


def test_clipping_bounds_the_gradient_the_update_uses():
    # eps >> |g| turns Adam's first step into lr * g / eps, so the update scales with the
    # clipped gradient and clipping is visible in its size.
    settings = dict(learning_rate=0.1, num_steps=10, eps=1e3, weight_decay=0.0)
    params = {"w": jnp.zeros(4), "v": jnp.zeros((2, 2))}
    grads = {"w": jnp.full(4, 300.0), "v": jnp.full((2, 2), -400.0)}
    norm = float(optax.tree.norm(grads))

    def first_update(tx, g):
        return jax.jit(lambda g: tx.update(g, tx.init(params), params)[0])(g)

    clipped = first_update(make_optimizer(clip_norm=1.0, **settings), grads)
    unclipped = first_update(make_optimizer(clip_norm=None, **settings), grads)
    by_hand = first_update(make_optimizer(clip_norm=None, **settings),
                           jax.tree.map(lambda g: g / norm, grads))
    assert float(optax.tree.norm(clipped)) <= 0.1 * 1.0 / 1e3 * 1.0001
    assert float(optax.tree.norm(unclipped)) > 100 * float(optax.tree.norm(clipped))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), clipped, by_hand)


def test_small_gradients_are_not_clipped():
    settings = dict(learning_rate=0.1, num_steps=10, eps=1e3)
    params, grads = {"w": jnp.zeros(3)}, {"w": jnp.array([0.1, -0.2, 0.3])}
    a = make_optimizer(clip_norm=1.0, **settings)
    b = make_optimizer(clip_norm=None, **settings)
    ua = a.update(grads, a.init(params), params)[0]
    ub = b.update(grads, b.init(params), params)[0]
    np.testing.assert_array_equal(ua["w"], ub["w"])


def linear_loss(params, x, y):
    return jnp.mean((x @ params["kernel"] + params["bias"] - y) ** 2)


def train(tx, params, batches):
    @jax.jit
    def step(params, state, x, y):
        updates, state = tx.update(jax.grad(linear_loss)(params, x, y), state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for x, y in batches:
        params, state = step(params, state, x, y)
    return params


def test_grad_accumulation_equals_one_step_on_a_k_times_larger_batch():
    k, micro, updates = 4, 3, 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(updates * k * micro, 5)).astype(np.float32)
    y = rng.normal(size=(updates * k * micro, 2)).astype(np.float32)
    params = {"kernel": jnp.asarray(rng.normal(size=(5, 2)), jnp.float32), "bias": jnp.zeros(2)}
    # Counts are in batches: k micro-batches per update -> k times the steps and warmup.
    common = dict(learning_rate=0.1, decay="cosine", weight_decay=0.1, clip_norm=0.5)
    big = make_optimizer(num_steps=4, warmup_steps=2, **common)
    accumulated = make_optimizer(num_steps=4 * k, warmup_steps=2 * k, grad_accum_steps=k, **common)

    big_batches = [(x[i:i + k * micro], y[i:i + k * micro]) for i in range(0, len(x), k * micro)]
    micro_batches = [(x[i:i + micro], y[i:i + micro]) for i in range(0, len(x), micro)]
    want = train(big, params, big_batches)
    got = train(accumulated, params, micro_batches)
    assert float(jnp.abs(want["kernel"] - params["kernel"]).max()) > 1e-3  # it did move
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, want)
    partial = train(accumulated, params, micro_batches[:k - 1])  # no update mid-group
    jax.tree.map(np.testing.assert_array_equal, partial, params)


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(10, 4, name="embed")(tokens)
        x = nn.LayerNorm(name="norm")(nn.Dense(4, name="dense")(x))
        return nn.RMSNorm(name="rms")(x)


def test_weight_decay_skips_biases_and_norm_scales():
    params = jax.jit(Tiny().init)(jax.random.key(0), jnp.zeros((2,), jnp.int32))["params"]
    mask = decay_mask(params)
    assert mask == {"embed": {"embedding": True}, "dense": {"kernel": True, "bias": False},
                    "norm": {"scale": False, "bias": False}, "rms": {"scale": False}}

    # Behaviour, not just the mask: zero gradients, so AdamW's only move is the decay.
    tx = make_optimizer(learning_rate=0.5, num_steps=10, weight_decay=0.2, clip_norm=None)
    params = jax.tree.map(lambda p: p + 1.0, params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    step = jax.jit(lambda p, g: optax.apply_updates(p, tx.update(g, tx.init(p), p)[0]))
    new = step(params, zeros)
    shrunk = jax.tree.map(lambda a, b: bool(jnp.allclose(b, a * (1 - 0.5 * 0.2))), params, new)
    unchanged = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, new)
    assert shrunk["dense"]["kernel"] and shrunk["embed"]["embedding"]
    assert unchanged["dense"]["bias"] and unchanged["norm"]["scale"] and unchanged["rms"]["scale"]


@pytest.mark.parametrize("bad, message", [
    (dict(warmup_steps=20), "warmup_steps=20"),
    (dict(decay="exp"), r"decay='exp' is not a valid choice; choose one of \['cosine', 'linear', 'constant'\]"),
    (dict(clip_norm=0.0), "None to disable"),
    (dict(grad_accum_steps=0), "grad_accum_steps=0"),
    (dict(mu_dtype="bf17"), "mu_dtype='bf17' is not a dtype"),
])
def test_bad_settings_say_what_to_change(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        OptimizerConfig(**{"learning_rate": 0.1, "num_steps": 10, **bad})


def run_updates(tx, params, steps=5, seed=0):
    """`steps` AdamW updates with random gradients (the same for every tx given the seed)."""
    state = tx.init(params)
    keys = jax.random.split(jax.random.key(seed), steps)
    for key in keys:
        leaves, tree = jax.tree.flatten(params)
        grads = tree.unflatten([jax.random.normal(k, x.shape) for k, x in
                                zip(jax.random.split(key, len(leaves)), leaves)])
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_plain_config_keeps_optax_adamw_state_layout_and_updates():
    """Existing checkpoints hold optax.adamw's state: the config's own chain must match it."""
    params = jax.jit(Tiny().init)(jax.random.key(0), jnp.zeros((2,), jnp.int32))["params"]
    config = OptimizerConfig(learning_rate=1e-2, num_steps=10, weight_decay=0.1)
    reference = optax.chain(optax.clip_by_global_norm(1.0),  # what build() made before the switches
                            optax.adamw(config.schedule(), weight_decay=0.1, mask=decay_mask))
    ours, ours_state = run_updates(config.build(), params)
    theirs, theirs_state = run_updates(reference, params)
    assert jax.tree.structure(ours_state) == jax.tree.structure(theirs_state)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flattened_adam_gives_the_same_parameters_and_still_skips_decay_on_biases():
    params = jax.jit(Tiny().init)(jax.random.key(1), jnp.zeros((2,), jnp.int32))["params"]
    settings = dict(learning_rate=1e-2, num_steps=10, weight_decay=0.1, warmup_steps=2)
    plain, _ = run_updates(OptimizerConfig(**settings).build(), params)
    flat, flat_state = run_updates(OptimizerConfig(**settings, flatten=True).build(), params)
    for a, b in zip(jax.tree.leaves(flat), jax.tree.leaves(plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    mu = flat_state[1][0].mu  # after clipping: the chain's Adam state, over the flat vector
    assert mu.ndim == 1 and mu.size == sum(x.size for x in jax.tree.leaves(params))


def test_bfloat16_first_moment_stays_within_its_rounding():
    params = jax.jit(Tiny().init)(jax.random.key(2), jnp.zeros((2,), jnp.int32))["params"]
    settings = dict(learning_rate=1e-2, num_steps=10, weight_decay=0.1)
    plain, _ = run_updates(OptimizerConfig(**settings).build(), params)
    bf16, state = run_updates(OptimizerConfig(**settings, mu_dtype="bfloat16").build(), params)
    assert all(m.dtype == jnp.bfloat16 for m in jax.tree.leaves(state[1][0].mu))
    moved = [float(jnp.abs(b - p).max()) for b, p in zip(jax.tree.leaves(plain), jax.tree.leaves(params))]
    diffs = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(bf16), jax.tree.leaves(plain))]
    # 5 updates of size ~lr: bfloat16's 2^-8 relative rounding of mu moves each by < 1% of lr
    assert max(diffs) < 5 * 1e-2 * 0.01 and max(diffs) > 0 and max(moved) > 1e-2
