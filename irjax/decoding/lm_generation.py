"""Batched text generation with a decoder-only LM and its key/value cache: greedy, temperature,
top-k and nucleus sampling, stopping at end-of-sequence ids or after `max_new_tokens`.

    prompts --left-pad--> DecoderLM.extend (one pass writes the prompt cache) --> while_loop:
    filter + sample the last logits, append the token (DecoderLM.extend with one position)

Shared-prefix caching: `encode_prefix` runs a prompt common to every row (e.g. a few-shot
preamble) once, batch 1; `generate(..., prefix_cache=...)` copies that cache to every row and
appends only the rows' own prompts. Because attention is decided by token positions (see
irjax/models/decoder_lm.py), the pads between prefix and a shorter continuation are invisible and
positions continue from the prefix, so the tokens are those of generating from prefix + prompt.

Sampling reuses `filter_logits` (temperature, then top-k, then top-p); the key for step t is
`fold_in(rng, t)`, so equal logits give equal samples.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from irjax.data.batching import round_up
from irjax.decoding.sampling import filter_logits
from irjax.models.decoder_lm import DecodeCache, DecoderLM, init_cache


PROMPT_BUCKET = 32        # prompt widths are padded to multiples of this many ids
NUCLEUS_CANDIDATES = 256  # top-p looks for its nucleus among this many tokens first
# generate's speed switches turned off: the earlier path, for benchmarks and equality tests
BASELINE_OPTIONS = {"bucket": None, "last_logits_only": False, "nucleus_candidates": None}


class Generated(NamedTuple):
    """tokens int32 [B, max_new_tokens] (pad after the end), lengths int32 [B] counting the tokens
    up to and including the first end-of-sequence id (max_new_tokens if none came)."""

    tokens: np.ndarray
    lengths: np.ndarray

    def sequences(self) -> list[list[int]]:
        """Each row's generated ids, end-of-sequence id included."""
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths)]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0,
             width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) int32 [B, width (default: the longest)]: each prompt right-aligned, so every
    row's next token is written to the same cache slot."""
    if not prompts:
        raise ValueError("no prompts to generate from")
    longest = max(len(p) for p in prompts)
    if width is None:
        width = longest
    elif width < longest:
        raise ValueError(f"width {width} is shorter than the longest prompt ({longest} ids)")
    ids = np.full((len(prompts), width), pad_id, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for row, prompt in enumerate(prompts):
        if len(prompt):
            ids[row, width - len(prompt):] = prompt
            mask[row, width - len(prompt):] = 1
    return ids, mask


def encode_prefix(model: DecoderLM, params: Any, prefix: Sequence[int],
                  max_length: int) -> DecodeCache:
    """The cache (batch 1) of `prefix` in a cache of `max_length` slots; size it for the prefix,
    the longest prompt that follows and the tokens to generate."""
    if not len(prefix):
        raise ValueError("empty prefix: generate without prefix_cache instead")
    if len(prefix) > max_length:
        raise ValueError(f"prefix of {len(prefix)} tokens does not fit max_length={max_length}")
    ids = jnp.asarray(np.asarray(prefix, np.int32)[None])
    empty = init_cache(model.config, 1, max_length)
    return _extend(model, params, ids, jnp.ones_like(ids), empty, last_only=True)[1]


# The cache argument is donated: it is always a fresh array here (init_cache, a repeated prefix
# or the previous pass's output), so XLA may write the prompt into it in place.
@functools.partial(jax.jit, static_argnames=("model", "last_only"), donate_argnames=("cache",))
def _extend(model: DecoderLM, params: Any, ids: jax.Array, mask: jax.Array,
            cache: DecodeCache, last_only: bool = True) -> tuple[jax.Array, DecodeCache]:
    return model.apply({"params": params}, ids, cache, mask, last_only=last_only,
                       method=DecoderLM.extend)


def prompt_width(longest: int, bucket: int | None, room: int | None = None) -> int:
    """The padded prompt width: `longest` rounded up to a multiple of `bucket` (None: no
    rounding), at most `room` (the cache slots left) and never below `longest`. Rounding bounds
    the compiled shapes of the prompt pass and of the decoding loop (whose cache length follows
    the width) to one per bucket instead of one per distinct longest prompt."""
    if bucket is None:
        return longest
    width = round_up(longest, bucket)
    return max(longest, min(width, room)) if room is not None else width


def generate(model: DecoderLM, params: Any, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, eos_ids: Sequence[int] = (), rng: Any = 0,
             greedy: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, prefix_cache: DecodeCache | None = None,
             pad_id: int = 0, bucket: int | None = PROMPT_BUCKET,
             last_logits_only: bool = True,
             nucleus_candidates: int | None = NUCLEUS_CANDIDATES) -> Generated:
    """Continues each prompt (token ids) by up to `max_new_tokens` tokens.

    `greedy` takes the argmax; otherwise tokens are sampled at `temperature` from the top-k /
    nucleus filtered distribution. A row stops at its first id in `eos_ids`. `prefix_cache`
    (from `encode_prefix`) is a prompt prefix shared by every row, encoded once.

    Speed switches that leave the tokens unchanged (off = the earlier path, kept for
    tools/bench_lm_generation.py): `bucket` left-pads prompts to a multiple of that many ids;
    `last_logits_only` projects only the prompt's last position onto the vocabulary;
    `nucleus_candidates` looks for the top-p nucleus among that many most likely tokens before
    sorting the whole vocabulary (irjax.decoding.sampling.filter_logits).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not greedy and not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be positive and finite, got {temperature}; "
                         "use greedy=True for argmax decoding")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    vocab = model.config.vocab_size
    bad = [e for e in eos_ids if not 0 <= e < vocab]
    if bad:
        raise ValueError(f"eos_ids {bad} are outside the vocabulary of {vocab} ids")
    if not prompts:
        raise ValueError("no prompts to generate from")
    longest = max(len(p) for p in prompts)
    rows = len(prompts)
    if prefix_cache is None:
        ids, mask = left_pad(prompts, pad_id, prompt_width(longest, bucket))
        cache = init_cache(model.config, rows, ids.shape[1] + max_new_tokens)
    else:
        if prefix_cache.key_valid.shape[0] != 1:
            raise ValueError("prefix_cache must hold one row (encode_prefix's batch of 1)")
        used = int(prefix_cache.index)
        if used + longest + max_new_tokens > prefix_cache.max_length:
            raise ValueError(
                f"prefix_cache has {prefix_cache.max_length} slots; the prefix ({used}), the "
                f"longest prompt ({longest}) and max_new_tokens ({max_new_tokens}) need "
                f"{used + longest + max_new_tokens}: pass a larger max_length to "
                "encode_prefix")
        room = prefix_cache.max_length - used - max_new_tokens
        ids, mask = left_pad(prompts, pad_id, prompt_width(longest, bucket, room))
        # a copy even for one row: the prompt pass donates (overwrites) the cache it is given
        # (repeat shares the scalar slot index, so it is copied too)
        cache = prefix_cache.repeat(rows)._replace(index=jnp.copy(prefix_cache.index)) \
            if rows > 1 else jax.tree.map(jnp.copy, prefix_cache)
    logits, cache = _extend(model, params, jnp.asarray(ids), jnp.asarray(mask), cache,
                            last_only=last_logits_only)
    rng = rng if isinstance(rng, jax.Array) else jax.random.key(int(rng))
    tokens, lengths = _decode(model, params, logits[:, -1], cache, rng,
                              jnp.asarray(np.asarray(list(eos_ids), np.int32)),
                              max_new_tokens=max_new_tokens, greedy=greedy,
                              temperature=float(temperature), top_k=top_k, top_p=top_p,
                              pad_id=pad_id, nucleus_candidates=nucleus_candidates)
    return Generated(np.asarray(tokens), np.asarray(lengths))


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "greedy", "temperature",
                                             "top_k", "top_p", "pad_id", "nucleus_candidates"))
def _decode(model: DecoderLM, params: Any, logits: jax.Array, cache: DecodeCache, rng: jax.Array,
            eos_ids: jax.Array, *, max_new_tokens: int, greedy: bool, temperature: float,
            top_k: int | None, top_p: float | None, pad_id: int,
            nucleus_candidates: int | None = None) -> tuple[jax.Array, jax.Array]:
    """The sampling loop from the prompt's last logits [B, V]; one `extend` per new token."""
    rows = logits.shape[0]

    def keep_going(carry: tuple[Any, ...]) -> jax.Array:
        step, _, done, _, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        step, tokens, done, lengths, logits, cache = carry
        if greedy:
            token = jnp.argmax(logits, axis=-1)
        else:
            filtered = filter_logits(logits / temperature, top_k, top_p, nucleus_candidates)
            token = jax.random.categorical(jax.random.fold_in(rng, step), filtered, axis=-1)
        token = jnp.where(done, pad_id, token).astype(jnp.int32)
        tokens = tokens.at[:, step].set(token)
        ended = ~done & jnp.isin(token, eos_ids)
        lengths = jnp.where(ended, step + 1, lengths)
        next_logits, cache = model.apply({"params": params}, token[:, None], cache,
                                         method=DecoderLM.extend)
        return step + 1, tokens, done | ended, lengths, next_logits[:, -1], cache

    init = (jnp.int32(0), jnp.full((rows, max_new_tokens), pad_id, jnp.int32),
            jnp.zeros((rows,), bool), jnp.full((rows,), max_new_tokens, jnp.int32), logits, cache)
    _, tokens, _, lengths, _, _ = lax.while_loop(keep_going, body, init)
    return tokens, lengths
