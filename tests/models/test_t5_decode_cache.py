"""T5's incremental decoding (`init_decode_cache` + `decode_step`): at every position the cached
logits equal a full `decode` of the prefix, for tied and untied embeddings and padded encoder
inputs, inside jit/scan; the single-row position bias is the full bias's row; greedy cached
decoding reproduces teacher forcing."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import DecodeCache, RelativePositionBias, T5Config, shift_right

# Few buckets and a short max distance, so a 20-token decode covers the exact, logarithmic and
# last buckets of the causal bias.
TINY = dict(vocab_size=64, relative_attention_num_buckets=8, relative_attention_max_distance=16,
            dropout_rate=0.0)
B, LI, T = 3, 11, 20


def setup(tied: bool):
    model = Seq2SeqModel(T5Config.preset("tiny", tie_word_embeddings=tied, **TINY))
    rng = np.random.default_rng(int(tied))
    inputs_mask = (np.arange(LI) < np.array([[LI], [7], [2]])).astype(np.int32)   # padded rows
    inputs = rng.integers(2, 64, (B, LI)).astype(np.int32) * inputs_mask
    targets = rng.integers(2, 64, (B, T)).astype(np.int32)
    batch = {"inputs": jnp.asarray(inputs), "inputs_mask": jnp.asarray(inputs_mask),
             "targets": jnp.asarray(targets)}
    params = nn.unbox(model.init_variables(jax.random.key(5), batch))
    # A strong position bias: a wrong bias row (or cache slot) must move the logits a lot.
    bias = params["decoder"]["relpos_bias"]["embedding"]
    params["decoder"]["relpos_bias"]["embedding"] = bias * 10.0
    return model, params, batch


@functools.partial(jax.jit, static_argnames="config")
def cached_logits(params, encoded, inputs_mask, decoder_input_ids, *, config):
    """Logits [B, T, V] of `decode_step` over every position, in one compiled scan."""
    model = Seq2SeqModel(config)
    cache = model.init_decode_cache(params, encoded, inputs_mask, decoder_input_ids.shape[1])

    def step(cache, ids):
        logits, cache = model.decode_step(params, cache, ids)
        return cache, logits

    cache, logits = jax.lax.scan(step, cache, decoder_input_ids.T)
    return logits.transpose(1, 0, 2), cache


@pytest.mark.parametrize("tied", [False, True])
def test_cached_steps_match_the_full_decoder(tied):
    model, params, batch = setup(tied)
    encoded = model.encode(params, batch["inputs"], batch["inputs_mask"])
    decoder_input_ids = shift_right(batch["targets"])
    full = np.asarray(model.decode(params, encoded, batch["inputs_mask"], decoder_input_ids))
    cached, cache = cached_logits(params, encoded, batch["inputs_mask"], decoder_input_ids,
                                   config=model.config)
    np.testing.assert_allclose(np.asarray(cached), full, rtol=1e-5, atol=1e-5)
    assert isinstance(cache, DecodeCache) and int(cache.index) == T
    assert all(kv.keys.shape == (B, model.config.num_heads, T, model.config.d_kv)
               for kv in cache.self_attention)
    assert all(kv.keys.shape[2] == LI for kv in cache.cross_attention)
    # Every slot was written: the final self-attention cache holds the keys of all T positions.
    assert all(np.abs(np.asarray(kv.keys[:, :, -1])).max() > 0 for kv in cache.self_attention)


def test_wrong_index_or_unwritten_slot_changes_the_logits():
    """The comparison above can fail: a step one cache slot late, or over a slot that was never
    written, gives clearly different logits."""
    model, params, batch = setup(False)
    encoded = model.encode(params, batch["inputs"], batch["inputs_mask"])
    ids = shift_right(batch["targets"])
    full = np.asarray(model.decode(params, encoded, batch["inputs_mask"], ids))
    cache = model.init_decode_cache(params, encoded, batch["inputs_mask"], T)
    before = []
    for t in range(7):
        before.append(cache)
        _, cache = model.decode_step(params, cache, ids[:, t])
    step = lambda c: np.asarray(model.decode_step(params, c, ids[:, 7])[0])  # noqa: E731
    np.testing.assert_allclose(step(cache), full[:, 7], rtol=1e-5, atol=1e-5)
    assert np.abs(step(cache._replace(index=cache.index + 1)) - full[:, 7]).max() > 1e-2
    assert np.abs(step(before[6]._replace(index=cache.index)) - full[:, 7]).max() > 1e-2


def test_one_row_position_bias_is_the_full_row():
    config = T5Config.preset("tiny", **TINY)
    module = RelativePositionBias(config, bidirectional=False)
    variables = module.init(jax.random.key(0), T, T)
    full = np.asarray(module.apply(variables, T, T))
    rows = [np.asarray(jax.jit(lambda i: module.apply(variables, 1, T, i))(jnp.int32(i)))
            for i in range(T)]
    np.testing.assert_array_equal(np.concatenate(rows, axis=2), full)
    assert len({r.tobytes() for r in rows}) == T   # rows differ: the offset is really used


def test_greedy_cached_decoding_matches_teacher_forcing():
    model, params, batch = setup(False)

    @jax.jit
    def greedy(params, inputs, inputs_mask):
        encoded = model.encode(params, inputs, inputs_mask)
        cache = model.init_decode_cache(params, encoded, inputs_mask, T)

        def step(carry, _):
            cache, previous = carry
            logits, cache = model.decode_step(params, cache, previous)
            token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            return (cache, token), token

        start = jnp.zeros((inputs.shape[0],), jnp.int32)
        _, tokens = jax.lax.scan(step, (cache, start), None, length=T)
        return tokens.T

    tokens = greedy(params, batch["inputs"], batch["inputs_mask"])
    forced = model.logits(params, {**batch, "targets": tokens})
    np.testing.assert_array_equal(jnp.argmax(forced, axis=-1), tokens)
