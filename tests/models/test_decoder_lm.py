"""DecoderLM against a float64 numpy forward pass written from the HF modelling code (Gemma 3 and
Llama / Qwen2 variants), its masks against dense references, padding and the key/value cache
against the full forward pass."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.decoder_lm import (DecoderConfig, DecoderLM, attention_mask, init_cache,
                                     positions_from_mask)
from irjax.models.lm_import import config_from_hf, convert_state_dict
from tests.helpers.tiny_lm import GEMMA3, LLAMA, QWEN2, random_checkpoint, reference_logits

VARIANTS = {"gemma3": GEMMA3, "llama": LLAMA, "qwen2": QWEN2}


@functools.lru_cache(maxsize=None)
def tiny(variant: str, **overrides) -> tuple[dict, dict, DecoderConfig, dict]:
    """(HF config, HF tensors, DecoderConfig, irjax params) of a seeded tiny checkpoint."""
    cfg = {**VARIANTS[variant], **overrides}
    tensors = random_checkpoint(cfg, seed=len(variant))
    config = config_from_hf(cfg)
    return cfg, tensors, config, convert_state_dict(tensors, config)


def ids_of(length: int, rows: int = 1, seed: int = 0, vocab: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, vocab, (rows, length)).astype(np.int32)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matches_numpy_reference(variant):
    cfg, tensors, config, params = tiny(variant)
    ids = ids_of(9)
    want = reference_logits(cfg, tensors, ids[0])
    got = np.asarray(DecoderLM(config).apply({"params": params}, jnp.asarray(ids)))[0]
    scale = np.abs(want).max()
    assert scale > 1.0  # not a degenerate model
    np.testing.assert_allclose(got, want, atol=2e-5 * scale, rtol=0)


def test_gemma_flags_are_all_in_play():
    """The Gemma reference differs from Llama's equations: check the tiny config exercises a
    sliding layer shorter than the sequence, two RoPE bases and the non-head_dim scale."""
    _, _, config, _ = tiny("gemma3")
    assert [config.is_sliding(i) for i in range(3)] == [True, True, False]
    assert config.sliding_window < 9 and config.rope_local_theta != config.rope_theta
    assert config.norm_offset == 1.0 and config.qk_norm and config.sandwich_norms


def test_bidirectional_matches_numpy_reference():
    cfg, tensors, config, params = tiny("gemma3", use_bidirectional_attention=True,
                                        sliding_window=4)
    assert not config.causal
    ids = ids_of(9, seed=3)
    want = reference_logits(cfg, tensors, ids[0], causal=False)
    got = np.asarray(DecoderLM(config).apply({"params": params}, jnp.asarray(ids)))[0]
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=0)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 1, 3, 4])
def test_attention_mask_matches_dense_loops(causal, window):
    """Position-based masks against the definition written as loops, with padding inside."""
    valid = np.array([[0, 1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]], np.int32)
    pos = np.asarray(positions_from_mask(jnp.asarray(valid)))
    got = np.asarray(attention_mask(jnp.asarray(pos), jnp.asarray(pos), jnp.asarray(valid) > 0,
                                    causal, window))[:, 0]
    want = np.zeros_like(got)
    for b in range(2):
        for q in range(7):
            for k in range(7):
                d = pos[b, q] - pos[b, k]
                if causal:
                    ok = 0 <= d and (window is None or d < window)
                else:
                    ok = window is None or abs(d) <= window // 2
                want[b, q, k] = ok and valid[b, k]
    np.testing.assert_array_equal(got, want)
    assert pos[0].tolist() == [0, 0, 1, 2, 2, 3, 4]


@pytest.mark.parametrize("variant", ["gemma3", "qwen2"])
def test_padding_does_not_change_real_tokens(variant):
    """Left-padded and inner-padded rows give the unpadded row's logits at the real tokens."""
    _, _, config, params = tiny(variant)
    model = DecoderLM(config)
    ids = ids_of(6, seed=5)
    alone = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))[0]
    padded = np.concatenate([np.zeros((1, 3), np.int32), ids[:, :2], [[0]], ids[:, 2:]], axis=1)
    mask = (np.arange(padded.shape[1]) >= 3) & (np.arange(padded.shape[1]) != 5)
    got = np.asarray(model.apply({"params": params}, jnp.asarray(padded),
                                 jnp.asarray(mask[None].astype(np.int32))))[0][mask]
    np.testing.assert_allclose(got, alone, atol=1e-5 * np.abs(alone).max(), rtol=0)


@pytest.mark.parametrize("variant", ["gemma3", "llama"])
def test_kv_cache_decoding_equals_full_forward(variant):
    """A 4-token prompt, then one token per step, with left padding in one row: each position's
    logits equal the full pass's (the sliding window crosses the prompt/step boundary)."""
    _, _, config, params = tiny(variant)
    model = DecoderLM(config)
    ids = ids_of(10, rows=2, seed=7)
    mask = np.ones_like(ids)
    mask[1, :2] = 0
    full = np.asarray(model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask)))
    extend = jax.jit(lambda i, c, m: model.apply({"params": params}, i, c, m,
                                                 method=DecoderLM.extend))
    cache = init_cache(config, 2, 12)
    logits, cache = extend(jnp.asarray(ids[:, :4]), cache, jnp.asarray(mask[:, :4]))
    steps = [np.asarray(logits)]
    for t in range(4, 10):
        logits, cache = extend(jnp.asarray(ids[:, t:t + 1]), cache, jnp.asarray(mask[:, t:t + 1]))
        steps.append(np.asarray(logits))
    got = np.concatenate(steps, axis=1)
    real = mask > 0
    np.testing.assert_allclose(got[real], full[real], atol=1e-5 * np.abs(full).max(), rtol=0)
    assert int(cache.index) == 10 and cache.next_position.tolist() == [10, 8]


def test_untied_head_and_softcap():
    """An untied lm_head is used (changing it changes the logits); a final softcap bounds them."""
    _, _, config, params = tiny("llama")
    assert not config.tie_word_embeddings and "lm_head" in params
    ids = jnp.asarray(ids_of(5))
    plain = np.asarray(DecoderLM(config).apply({"params": params}, ids))
    capped_config = DecoderConfig(**{**config.__dict__, "final_logit_softcap": 2.0})
    capped = np.asarray(DecoderLM(capped_config).apply({"params": params}, ids))
    np.testing.assert_allclose(capped, 2.0 * np.tanh(plain / 2.0), atol=1e-5)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="num_kv_heads"):
        DecoderConfig.llama(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1,
                            num_heads=3, num_kv_heads=2, head_dim=4)
    with pytest.raises(ValueError, match="activation"):
        DecoderConfig.llama(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1,
                            num_heads=2, num_kv_heads=2, head_dim=4, activation="relu")


def test_bfloat16_compute_stays_close():
    """dtype='bfloat16' runs every matmul in bfloat16 (softmax and norms in float32)."""
    _, _, config, params = tiny("gemma3")
    ids = jnp.asarray(ids_of(9, seed=9))
    full = np.asarray(DecoderLM(config).apply({"params": params}, ids))
    half_config = DecoderConfig(**{**config.__dict__, "dtype": "bfloat16"})
    half = np.asarray(DecoderLM(half_config).apply({"params": params}, ids))
    assert half.dtype == np.float32
    error = np.abs(half - full).max() / np.abs(full).max()
    assert 0 < error < 0.05


@pytest.mark.parametrize("variant", ["gemma3", "llama"])
def test_last_only_logits_equal_the_full_pass_last_position(variant):
    """extend(last_only=True) returns the last slot's logits of the full prompt pass (left
    padding in one row), and the same cache."""
    _, _, config, params = tiny(variant)
    model = DecoderLM(config)
    ids, mask = ids_of(6, rows=2, seed=3), np.ones((2, 6), np.int32)
    mask[1, :3] = 0
    run = jax.jit(lambda last: model.apply({"params": params}, jnp.asarray(ids),
                                           init_cache(config, 2, 8), jnp.asarray(mask),
                                           last_only=last, method=DecoderLM.extend),
                  static_argnums=0)
    (full, full_cache), (last, last_cache) = run(False), run(True)
    assert full.shape == (2, 6, config.vocab_size) and last.shape == (2, 1, config.vocab_size)
    np.testing.assert_array_equal(np.asarray(last)[:, 0], np.asarray(full)[:, -1])
    for a, b in zip(jax.tree.leaves(full_cache), jax.tree.leaves(last_cache)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
