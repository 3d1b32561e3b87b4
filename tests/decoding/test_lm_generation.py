"""Generation with the decoder LM's key/value cache: greedy equals argmax decoding by full
recomputation, shared-prefix caching gives the tokens of no caching, EOS stops rows, sampling
filters and seeds behave."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.decoding.lm_generation import (BASELINE_OPTIONS, encode_prefix, generate,
                                          left_pad, prompt_width)
from irjax.models.decoder_lm import DecoderLM
from irjax.models.lm_import import config_from_hf, convert_state_dict
from tests.helpers.tiny_lm import GEMMA3, LLAMA, random_checkpoint


@functools.lru_cache(maxsize=None)
def tiny(variant: str):
    """Untied output in both: a tiny random tied model mostly repeats its last input token."""
    cfg = {"gemma3": dict(GEMMA3, tie_word_embeddings=False), "llama": LLAMA}[variant]
    config = config_from_hf(cfg)
    return DecoderLM(config), convert_state_dict(random_checkpoint(cfg, seed=21), config)


PROMPTS = [[5, 17, 33, 2, 9], [41, 8], [60, 61, 62, 63]]


def greedy_by_recomputation(model, params, prompt, steps):
    """Argmax continuation running the whole sequence through the model at every step (right
    padded to one length, so it compiles once)."""
    width = len(prompt) + steps
    apply = jax.jit(lambda ids, mask: model.apply({"params": params}, ids, mask))
    ids = list(prompt)
    for _ in range(steps):
        row = np.zeros((1, width), np.int32)
        row[0, :len(ids)] = ids
        logits = apply(jnp.asarray(row), jnp.asarray((row * 0 + 1) * (np.arange(width) < len(ids))))
        ids.append(int(np.argmax(np.asarray(logits)[0, len(ids) - 1])))
    return ids[len(prompt):]


def test_greedy_equals_full_recomputation():
    """Gemma's sliding window (3) is shorter than prompt + generated tokens."""
    model, params = tiny("gemma3")
    out = generate(model, params, PROMPTS, max_new_tokens=6, greedy=True)
    assert out.tokens.shape == (3, 6) and out.lengths.tolist() == [6, 6, 6]
    assert len(set(out.tokens.ravel().tolist())) > 6  # not a model that repeats one token
    for row in (0, 1):
        assert out.tokens[row].tolist() == greedy_by_recomputation(model, params, PROMPTS[row], 6)


@pytest.mark.parametrize("variant", ["gemma3", "llama"])
def test_shared_prefix_cache_gives_the_same_tokens(variant):
    """A prefix encoded once and copied to every row (continuations of different lengths, so
    pads sit between prefix and continuation) samples what prefix + prompt samples uncached."""
    model, params = tiny(variant)
    prefix = [3, 14, 15, 92, 65, 35]
    cache = encode_prefix(model, params, prefix, max_length=len(prefix) + 5 + 7)
    kwargs = dict(max_new_tokens=7, rng=4, temperature=0.8, top_k=20, top_p=0.9)
    shared = generate(model, params, PROMPTS, prefix_cache=cache, **kwargs)
    plain = generate(model, params, [prefix + p for p in PROMPTS], **kwargs)
    np.testing.assert_array_equal(shared.tokens, plain.tokens)
    assert len(set(shared.tokens.ravel().tolist())) > 7


def test_eos_stops_each_row():
    model, params = tiny("llama")
    free = generate(model, params, PROMPTS, max_new_tokens=6, greedy=True)
    eos = int(free.tokens[0, 2])  # a token row 0 emits third
    out = generate(model, params, PROMPTS, max_new_tokens=6, greedy=True, eos_ids=[eos], pad_id=0)
    for row in range(3):
        hits = np.flatnonzero(free.tokens[row] == eos)
        length = int(hits[0]) + 1 if len(hits) else 6
        assert out.lengths[row] == length
        assert out.tokens[row, :length].tolist() == free.tokens[row, :length].tolist()
        assert (out.tokens[row, length:] == 0).all()
    assert out.sequences()[0][-1] == eos


def test_sampling_is_seeded_and_filtered():
    model, params = tiny("llama")
    kwargs = dict(max_new_tokens=8, temperature=1.5)
    a = generate(model, params, PROMPTS, rng=1, **kwargs)
    assert (a.tokens == generate(model, params, PROMPTS, rng=1, **kwargs).tokens).all()
    assert (a.tokens != generate(model, params, PROMPTS, rng=2, **kwargs).tokens).any()
    top1 = generate(model, params, PROMPTS, rng=3, top_k=1, **kwargs)
    greedy = generate(model, params, PROMPTS, max_new_tokens=8, greedy=True)
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)
    tiny_nucleus = generate(model, params, PROMPTS, rng=3, top_p=1e-6, **kwargs)
    np.testing.assert_array_equal(tiny_nucleus.tokens, greedy.tokens)


def test_left_pad_and_argument_errors():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=9, width=4)
    assert ids.tolist() == [[9, 1, 2, 3], [9, 9, 9, 4]] and mask.sum(1).tolist() == [3, 1]
    with pytest.raises(ValueError, match="shorter than the longest"):
        left_pad([[1, 2, 3]], width=2)
    model, params = tiny("llama")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, params, PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, params, PROMPTS, max_new_tokens=2, temperature=0.0)
    with pytest.raises(ValueError, match="eos_ids"):
        generate(model, params, PROMPTS, max_new_tokens=2, eos_ids=[96])
    cache = encode_prefix(model, params, [1, 2, 3], max_length=8)
    with pytest.raises(ValueError, match="encode_prefix"):
        generate(model, params, PROMPTS, max_new_tokens=4, prefix_cache=cache)


def test_prompt_width_buckets():
    assert [prompt_width(n, 8) for n in (1, 8, 9, 17)] == [8, 8, 16, 24]
    assert prompt_width(9, None) == 9
    assert prompt_width(9, 8, room=12) == 12 and prompt_width(9, 8, room=5) == 9


@pytest.mark.parametrize("variant,greedy", [("gemma3", False), ("llama", True)])
def test_speed_switches_give_the_same_tokens(variant, greedy):
    """Bucketed (extra left pads), last-position logits and the top-p candidate search sample
    exactly the tokens of the plain path, with and without a shared prefix; the buckets are
    wider than the prompts, so the pads really are there."""
    model, params = tiny(variant)
    kwargs = dict(max_new_tokens=6, rng=7, greedy=greedy, temperature=0.9, top_p=0.8)
    plain = generate(model, params, PROMPTS, **BASELINE_OPTIONS, **kwargs)
    fast = generate(model, params, PROMPTS, bucket=8, nucleus_candidates=4, **kwargs)
    np.testing.assert_array_equal(fast.tokens, plain.tokens)
    np.testing.assert_array_equal(fast.lengths, plain.lengths)
    prefix = [3, 14, 15, 92]
    def cached():  # a fresh prefix cache each time: generate must not have consumed the first
        return encode_prefix(model, params, prefix, max_length=len(prefix) + 16 + 6)
    cache = cached()
    plain = generate(model, params, PROMPTS, prefix_cache=cached(), **BASELINE_OPTIONS, **kwargs)
    for _ in range(2):  # the same cache twice: the donated prompt pass works on a copy
        fast = generate(model, params, PROMPTS, prefix_cache=cache, bucket=16, **kwargs)
        np.testing.assert_array_equal(fast.tokens, plain.tokens)
    if greedy:  # one row (its cache copied, not repeated); samples depend on the batch shape
        one = generate(model, params, PROMPTS[:1], prefix_cache=cache, bucket=16, **kwargs)
        np.testing.assert_array_equal(one.tokens[0], plain.tokens[0])
