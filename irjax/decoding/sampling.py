"""Ancestral sampling with top-k and nucleus (top-p) filtering, e.g. docT5query-style query
generation: several diverse queries per document, each row stopping at its own EOS.

The model interface is the one `constrained_beam_search` uses: `log_prob_fn(decoder_input_ids
[N, L], step) -> [N, V]` logits for position `step` (or `log_prob_fn(ids, step, context)` when
`context` is given). `sample_sequences_with_state` serves a model that decodes incrementally
(e.g. with a key/value cache): its `step_fn(decoder_input_ids [N], step, state) -> ([N, V] logits,
state)` sees only position `step`'s input and carries its state through the sampling loop.
Rows are document-major: row `b * num_samples + s` is sample s of input b. Filtering order
follows common practice: temperature, then top-k, then top-p.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from irjax.decoding.constrained_beam_search import (LogProbFn, call_log_prob_fn,
                                                      decoder_inputs, positive_int)
from irjax.index.docid_trie import EOS_ID, PAD_ID

StepFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]


def filter_logits(logits: jax.Array, top_k: int | None = None,
                  top_p: float | None = None, candidates: int | None = None) -> jax.Array:
    """Logits [..., V] with tokens outside the top-k, then outside the nucleus, set to -inf.

    Top-k keeps exactly k tokens (ties at the k-th value broken by lower id). The nucleus is the
    smallest set of most likely tokens whose probability reaches top_p; the most likely token is
    always kept.

    `candidates`: sort only that many most likely tokens when their probability already reaches
    top_p (then the nucleus lies among them), the whole vocabulary otherwise. A full sort of a
    49k-152k vocabulary per row and step dominated a decoding step on CPU.
    """
    logits = jnp.asarray(logits, jnp.float32)
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        _, keep_ids = lax.top_k(logits, top_k)
        keep = jnp.zeros(logits.shape, bool)
        keep = jnp.put_along_axis(keep, keep_ids, True, axis=-1, inplace=False)
        logits = jnp.where(keep, logits, -jnp.inf)
    if top_p is not None and top_p < 1.0:
        if candidates is not None and candidates < vocab:
            full = lambda x: _nucleus(x, top_p, vocab)  # noqa: E731
            part = lambda x: _nucleus(x, top_p, candidates)  # noqa: E731
            top = lax.top_k(logits, candidates)[0]
            mass = jnp.sum(jnp.exp(top - jax.nn.logsumexp(logits, axis=-1, keepdims=True)), -1)
            logits = lax.cond(jnp.all(mass >= top_p), part, full, logits)
        else:
            logits = _nucleus(logits, top_p, vocab)
    return logits


def _nucleus(logits: jax.Array, top_p: float, width: int) -> jax.Array:
    """Logits outside the nucleus set to -inf, looking at the `width` most likely tokens (all
    others are dropped, so `width` must cover the nucleus)."""
    sorted_logits, order = lax.top_k(logits, width)                     # descending
    if width == logits.shape[-1]:
        probs = jax.nn.softmax(sorted_logits, axis=-1)
    else:  # the softmax of the whole vocabulary, read at the candidates
        shifted = jnp.exp(logits - sorted_logits[..., :1])
        probs = jnp.exp(sorted_logits - sorted_logits[..., :1]) / jnp.sum(shifted, -1,
                                                                         keepdims=True)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = mass_before < top_p
    keep = jnp.put_along_axis(jnp.zeros(logits.shape, bool), order, keep_sorted, axis=-1,
                              inplace=False)
    return jnp.where(keep, logits, -jnp.inf)


def sample_sequences(log_prob_fn: LogProbFn, rng: jax.Array, batch_size: int, num_samples: int,
                     max_length: int, eos_id: int = EOS_ID, top_k: int | None = None,
                     top_p: float | None = None, temperature: float = 1.0,
                     context: Any = None) -> tuple[jax.Array, jax.Array]:
    """Samples `num_samples` sequences per input.

    Returns (tokens int32 [B, num_samples, max_length], lengths int32 [B, num_samples]). A row's
    length counts its tokens up to and including EOS (max_length if it never emitted EOS);
    everything after is pad (0). top_k=1 is greedy decoding.
    """
    settings = _settings(batch_size, num_samples, max_length, eos_id, top_k, top_p, temperature)
    return _sample(_as_key(rng), context, model_fn=log_prob_fn, stateful=False, **settings)


def sample_sequences_with_state(step_fn: StepFn, state: Any, rng: jax.Array, batch_size: int,
                                num_samples: int, max_length: int, eos_id: int = EOS_ID,
                                top_k: int | None = None, top_p: float | None = None,
                                temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """`sample_sequences` for a model that decodes one position per step.

    `step_fn(decoder_input_ids [N], step, state) -> (logits [N, V], new state)` gets position
    `step`'s decoder input only: the start token (pad) at step 0, then the token sampled at
    step - 1 (pad once the row has ended), exactly column `step` of what `log_prob_fn` would see.
    `state` (e.g. params and a key/value cache) is the while_loop carry, so its shapes must stay
    fixed. The rng is used as in `sample_sequences`: equal logits give equal samples.
    """
    settings = _settings(batch_size, num_samples, max_length, eos_id, top_k, top_p, temperature)
    return _sample(_as_key(rng), state, model_fn=step_fn, stateful=True, **settings)


def _settings(batch_size: int, num_samples: int, max_length: int, eos_id: int,
              top_k: int | None, top_p: float | None, temperature: float) -> dict[str, Any]:
    """The checked static arguments of `_sample`."""
    batch_size = positive_int(batch_size, "batch_size")
    num_samples = positive_int(num_samples, "num_samples")
    max_length = positive_int(max_length, "max_length")
    eos_id = positive_int(eos_id, "eos_id")  # also rules out pad (0)
    if top_k is not None:
        top_k = positive_int(top_k, "top_k")
    if top_p is not None:
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    temperature = float(temperature)
    if not (temperature > 0.0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}; "
                         "for greedy decoding use top_k=1")
    return dict(batch_size=batch_size, num_samples=num_samples, max_length=max_length,
                eos_id=eos_id, top_k=top_k, top_p=top_p, temperature=temperature)


def _as_key(rng: Any) -> jax.Array:
    return rng if isinstance(rng, jax.Array) else jnp.asarray(rng)


@functools.partial(jax.jit, static_argnames=("model_fn", "stateful", "batch_size", "num_samples",
                                             "max_length", "eos_id", "top_k", "top_p",
                                             "temperature"))
def _sample(rng: jax.Array, context: Any, *, model_fn: LogProbFn | StepFn, stateful: bool,
            batch_size: int, num_samples: int, max_length: int, eos_id: int, top_k: int | None,
            top_p: float | None, temperature: float) -> tuple[jax.Array, jax.Array]:
    """`context` is log_prob_fn's context, or step_fn's initial state when `stateful`."""
    rows = batch_size * num_samples
    init = (jnp.int32(0), jnp.full((rows, max_length), PAD_ID, jnp.int32),
            jnp.zeros((rows,), bool), jnp.full((rows,), max_length, jnp.int32),
            context if stateful else None)

    def keep_going(carry: tuple[Any, ...]) -> jax.Array:
        step, _, done, _, _ = carry
        return (step < max_length) & ~jnp.all(done)

    def body(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        step, tokens, done, lengths, state = carry
        if stateful:
            inputs = lax.dynamic_index_in_dim(decoder_inputs(tokens), step, axis=1,
                                              keepdims=False)
            logits, state = model_fn(inputs, step, state)
            logits = jnp.asarray(logits)
            if logits.ndim != 2 or logits.shape[0] != rows:
                raise ValueError(f"step_fn returned logits of shape {logits.shape}; expected "
                                 f"[{rows}, V] (one row of vocabulary scores per sample)")
            logits = logits.astype(jnp.float32)
        else:
            logits = call_log_prob_fn(model_fn, tokens, step, context)
        if not 0 < eos_id < logits.shape[-1]:
            raise ValueError(f"eos_id={eos_id} is outside the vocabulary of size "
                             f"{logits.shape[-1]} that the model returns")
        logits = filter_logits(logits / temperature, top_k, top_p)
        token = jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1)
        token = jnp.where(done, PAD_ID, token).astype(jnp.int32)
        tokens = tokens.at[:, step].set(token)
        ended = ~done & (token == eos_id)
        lengths = jnp.where(ended, step + 1, lengths)
        return step + 1, tokens, done | ended, lengths, state

    _, tokens, _, lengths, _ = lax.while_loop(keep_going, body, init)
    return (tokens.reshape(batch_size, num_samples, max_length),
            lengths.reshape(batch_size, num_samples))
