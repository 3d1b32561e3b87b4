"""Sampling: top_k=1 is greedy, top-k and nucleus filtering never sample outside their sets,
EOS ends a row (pad after, length recorded), arguments are checked, and a stateful one-position
step_fn samples what the equivalent log_prob_fn does."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.decoding import filter_logits, sample_sequences, sample_sequences_with_state
from irjax.index.docid_trie import EOS_ID, PAD_ID
from tests.decoding.toy_models import linear_context, linear_model

# Tokens 2..5 and EOS with fixed probabilities; pad never.
_PROBS = np.array([0.0, 0.04, 0.5, 0.3, 0.1, 0.06])
_LOGITS = np.log(np.where(_PROBS > 0, _PROBS, 1e-30)).astype(np.float32)


def _fixed(ids, step):
    return jnp.broadcast_to(jnp.asarray(_LOGITS), (ids.shape[0], _LOGITS.size))


def _greedy(context, batch, length):
    """Reference greedy decoding, one eager step at a time."""
    embed, queries, out = (np.asarray(x, np.float64) for x in context)
    tokens = np.zeros((batch, length), np.int32)
    done = np.zeros(batch, bool)
    for step in range(length):
        inputs = np.pad(tokens[:, :-1], ((0, 0), (1, 0)))
        logits = linear_model(inputs, step, (embed, queries, out))
        token = np.where(done, PAD_ID, logits.argmax(axis=-1))
        tokens[:, step] = token
        done |= token == EOS_ID
    return tokens


def test_top_k_1_is_greedy():
    vocab, batch, length = 12, 3, 7
    context = linear_context(vocab, batch, seed=4)
    expected = _greedy(context, batch, length)
    for seed in (0, 1):
        tokens, lengths = sample_sequences(linear_model, jax.random.PRNGKey(seed), batch, 2, length,
                                           top_k=1, context=context)
        tokens = np.asarray(tokens)
        assert tokens.shape == (batch, 2, length)
        for s in range(2):
            np.testing.assert_array_equal(tokens[:, s], expected)
        ended = (expected == EOS_ID).any(axis=1)
        want = np.where(ended, (expected == EOS_ID).argmax(axis=1) + 1, length)
        np.testing.assert_array_equal(np.asarray(lengths), np.stack([want] * 2, axis=1))


@pytest.mark.parametrize("top_p, nucleus", [(0.75, {2, 3}), (0.85, {2, 3, 4}), (0.3, {2})])
def test_nucleus_sampling_stays_in_the_nucleus(top_p, nucleus):
    tokens, lengths = sample_sequences(_fixed, jax.random.PRNGKey(0), 4, 500, 1, top_p=top_p)
    sampled = np.asarray(tokens)[..., 0].ravel()
    assert set(sampled.tolist()) == nucleus           # never outside, and every member shows up
    if nucleus == {2, 3}:                             # renormalised 0.5 : 0.3
        assert abs(np.mean(sampled == 2) - 0.625) < 0.05
    assert (np.asarray(lengths) == 1).all()


def test_top_k_sampling_stays_in_the_top_k():
    tokens, _ = sample_sequences(_fixed, jax.random.PRNGKey(1), 2, 500, 1, top_k=2)
    assert set(np.asarray(tokens).ravel().tolist()) == {2, 3}
    tokens, _ = sample_sequences(_fixed, jax.random.PRNGKey(1), 2, 500, 1, temperature=2.0)
    assert set(np.asarray(tokens).ravel().tolist()) == {1, 2, 3, 4, 5}


def test_filter_logits():
    logits = jnp.asarray(np.stack([_LOGITS, _LOGITS[::-1]]))
    kept = np.isfinite(np.asarray(filter_logits(logits, top_k=3, top_p=0.7)))
    assert kept[0].tolist() == [False, False, True, True, False, False]
    assert kept[1].tolist() == [False, False, True, True, False, False][::-1]
    tied = np.isfinite(np.asarray(filter_logits(jnp.zeros((1, 5)), top_k=2)))
    assert tied.sum() == 2                            # exactly k even under ties
    np.testing.assert_array_equal(filter_logits(logits), logits)


def _stop_at(ids, step, stops):
    """Emits token 2 + row % 3 until step == stops[row], then EOS; later rows must stay pad."""
    rows = jnp.arange(ids.shape[0])
    onehot = jax.nn.one_hot(jnp.where(step == stops, EOS_ID, 2 + rows % 3), 6)
    return jnp.where(onehot > 0, 10.0, -10.0)


def test_eos_stops_rows_and_pads_after():
    stops = jnp.asarray([0, 3, 99, 1])                # 99: never stops within max_length
    tokens, lengths = sample_sequences(_stop_at, jax.random.PRNGKey(0), 2, 2, 6, top_k=1,
                                       context=stops)
    tokens, lengths = np.asarray(tokens).reshape(4, 6), np.asarray(lengths).ravel()
    assert lengths.tolist() == [1, 4, 6, 2]
    for row, length in enumerate(lengths):
        assert not tokens[row, length:].any()
        assert (tokens[row, :length - 1] == 2 + row % 3).all()
    assert [tokens[r, lengths[r] - 1] for r in (0, 1, 3)] == [EOS_ID] * 3
    assert EOS_ID not in tokens[2]


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"eos_id": 0}, "eos_id"),
    ({"eos_id": 6}, "outside the vocabulary"),
    ({"max_length": 0}, "max_length"),
])
def test_argument_errors(kwargs, match):
    args = {"max_length": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_sequences(_fixed, jax.random.PRNGKey(0), 1, 1, **args)


def _linear_step(inputs, step, state):
    """`linear_model` incrementally: the position-weighted embedding sum is carried as state, and
    only position `step`'s input is read."""
    hidden, (embed, queries, out) = state
    hidden = hidden + jnp.cos(0.9 * step + 0.5) * embed[inputs]
    query = jnp.repeat(queries, inputs.shape[0] // queries.shape[0], axis=0)
    return jnp.tanh(hidden + query) @ out, (hidden, (embed, queries, out))


@pytest.mark.parametrize("settings", [{}, {"top_k": 3}, {"top_p": 0.8, "temperature": 1.5}])
def test_stateful_step_fn_samples_like_log_prob_fn(settings):
    vocab, batch, samples, length = 12, 3, 4, 7
    context = linear_context(vocab, batch, seed=2)
    hidden = jnp.zeros((batch * samples, context[0].shape[1]), jnp.float32)
    for seed in (0, 1):
        rng = jax.random.PRNGKey(seed)
        want = sample_sequences(linear_model, rng, batch, samples, length, context=context,
                                **settings)
        got = sample_sequences_with_state(_linear_step, (hidden, context), rng, batch, samples,
                                          length, **settings)
        for w, g in zip(want, got):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        assert len(np.unique(np.asarray(want[0]).reshape(-1, length), axis=0)) > 1  # not trivial


def test_step_fn_must_return_one_row_per_sample():
    def bad(inputs, step, state):
        return jnp.zeros((inputs.shape[0],)), state
    with pytest.raises(ValueError, match="step_fn returned"):
        sample_sequences_with_state(bad, jnp.zeros(()), jax.random.PRNGKey(0), 1, 2, 3)


def test_nucleus_candidates_match_the_full_sort():
    """The candidate search keeps exactly the full sort's nucleus, whether the candidates hold
    it (peaked rows) or not (a flat row forces the full sort for the batch)."""
    rng = np.random.default_rng(0)
    peaked = rng.normal(size=(3, 500)).astype(np.float32) * 4
    flat = rng.normal(size=(1, 500)).astype(np.float32) * 0.1
    for logits in (peaked, np.concatenate([peaked, flat])):
        want = np.asarray(filter_logits(jnp.asarray(logits), top_p=0.9))
        got = np.asarray(jax.jit(lambda x: filter_logits(x, top_p=0.9, candidates=32))(logits))
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        np.testing.assert_array_equal(got[np.isfinite(got)], want[np.isfinite(want)])
    assert np.isfinite(want[:3]).sum(1).max() < 32 < np.isfinite(want[3]).sum()
