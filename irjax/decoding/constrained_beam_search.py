"""Trie-constrained beam search: generative retrieval (DSI) ranks documents by decoding docids,
and the trie keeps every hypothesis a prefix of a real docid, so every result is a document.

The model is a plain function, `log_prob_fn(decoder_input_ids [N, L] int32, step) -> [N, V]`:
logits (or log-probs) for position `step` given a 0-padded decoder input whose position 0 is
the start token 0 and whose positions 1..step hold the tokens generated so far. Rows are
query-major: row `b * beam_size + k` is beam k of query b, so a function that needs per-query
state (encoder outputs) repeats it `beam_size` times. Per-call arrays are best passed as
`context` (then the call is `log_prob_fn(ids, step, context)`): they are traced arguments of the
compiled search, whereas arrays captured in a fresh closure are compiled in as constants and a
new function object recompiles.

Scores are true sequence log-probabilities: each step's logits go through log_softmax over the
whole vocabulary before the trie mask, so a docid's score does not depend on which other docids
exist. A beam that emits EOS is finished: it keeps its score and pads; since log-probs are <= 0,
open beams can only fall, so finished and open beams compete fairly for the beam slots and
docids of different lengths are ranked correctly. With beam_size >= number of docids the search
is exhaustive.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from irjax.index.docid_trie import (EOS_ID, PAD_ID, ROOT, DocidTrie, TrieTables, advance,
                                    allowed_mask)

LogProbFn = Callable[..., jax.Array]


def decoder_inputs(generated: jax.Array) -> jax.Array:
    """Generated tokens [N, L] -> decoder input [N, L]: the start token, then the tokens shifted
    right by one (the last generated token is never an input)."""
    return jnp.pad(generated[:, :-1], ((0, 0), (1, 0)), constant_values=PAD_ID)


def call_log_prob_fn(log_prob_fn: LogProbFn, generated: jax.Array, step: jax.Array,
                     context: Any, vocab_size: int | None = None) -> jax.Array:
    """float32 [N, V] scores for position `step`, with the function's output shape checked."""
    inputs = decoder_inputs(generated)
    out = log_prob_fn(inputs, step) if context is None else log_prob_fn(inputs, step, context)
    out = jnp.asarray(out)
    rows = generated.shape[0]
    if out.ndim != 2 or out.shape[0] != rows or (vocab_size is not None
                                                 and out.shape[1] != vocab_size):
        want = f"[{rows}, {vocab_size if vocab_size is not None else 'V'}]"
        raise ValueError(f"log_prob_fn returned shape {out.shape}; expected {want} (one row of "
                         "vocabulary scores per decoder input row, for position `step` only)")
    return out.astype(jnp.float32)


def constrained_beam_search(log_prob_fn: LogProbFn, trie: DocidTrie, batch_size: int,
                            beam_size: int, max_length: int | None = None,
                            context: Any = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Beam search over trie-valid docids for `batch_size` queries.

    Returns (sequences int32 [B, beam, L], scores float32 [B, beam], doc_index int32 [B, beam]),
    best first. Sequences are docid tokens, EOS, then pad; L = max_length, which defaults to (and
    may not be below) `trie.max_depth`, the longest docid plus EOS. Beam slots left without a
    docid (fewer docids than beams, or zero-probability docids) get score -inf, doc_index -1 and
    an all-pad sequence.
    """
    if not isinstance(trie, DocidTrie):
        raise TypeError(f"trie must be a DocidTrie, got {type(trie).__name__}")
    batch_size = positive_int(batch_size, "batch_size")
    beam_size = positive_int(beam_size, "beam_size")
    if max_length is None:
        max_length = trie.max_depth
    max_length = positive_int(max_length, "max_length")
    if max_length < trie.max_depth:
        raise ValueError(f"max_length={max_length} is shorter than the trie's longest docid plus "
                         f"EOS ({trie.max_depth}); such docids could never be completed")
    return _beam_search(trie.tables(), context, log_prob_fn=log_prob_fn, batch_size=batch_size,
                        beam_size=beam_size, max_length=max_length, num_steps=trie.max_depth)


def rank_docids(log_prob_fn: LogProbFn, trie: DocidTrie, batch_size: int, beam_size: int,
                max_length: int | None = None, context: Any = None
                ) -> list[list[tuple[int, float]]]:
    """Per query, [(doc index, log-prob score)] best first, without empty slots or duplicates."""
    _, scores, docs = constrained_beam_search(log_prob_fn, trie, batch_size, beam_size,
                                              max_length, context)
    rankings = []
    for row_docs, row_scores in zip(np.asarray(docs).tolist(), np.asarray(scores).tolist()):
        seen: set[int] = set()
        ranking = []
        for doc, score in zip(row_docs, row_scores):
            if doc >= 0 and doc not in seen and math.isfinite(score):
                seen.add(doc)
                ranking.append((doc, float(score)))
        rankings.append(ranking)
    return rankings


@functools.partial(jax.jit, static_argnames=("log_prob_fn", "batch_size", "beam_size",
                                             "max_length", "num_steps"))
def _beam_search(tables: TrieTables, context: Any, *, log_prob_fn: LogProbFn, batch_size: int,
                 beam_size: int, max_length: int, num_steps: int
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    vocab = tables.wide_next.shape[1]
    b, k = batch_size, beam_size
    rows = b * k
    # A finished beam's only move: emit pad at no cost.
    stay = jnp.where(jnp.arange(vocab) == PAD_ID, 0.0, -jnp.inf).astype(jnp.float32)
    # Only beam 0 starts alive, so the first step does not fill the beam with copies of it.
    init = (jnp.full((b, k, max_length), PAD_ID, jnp.int32),
            jnp.broadcast_to(jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf), (b, k)
                             ).astype(jnp.float32),
            jnp.full((b, k), ROOT, jnp.int32),
            jnp.zeros((b, k), bool))

    def step_fn(step: jax.Array, state: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        seqs, scores, nodes, finished = state
        logits = call_log_prob_fn(log_prob_fn, seqs.reshape(rows, max_length), step, context,
                                  vocab)
        logp = jax.nn.log_softmax(logits, axis=-1)
        logp = jnp.where(jnp.isnan(logp), -jnp.inf, logp).reshape(b, k, vocab)
        allowed = allowed_mask(tables, nodes)                          # [b, k, V]
        moves = jnp.where(finished[..., None], stay, jnp.where(allowed, logp, -jnp.inf))
        candidates = (scores[..., None] + moves).reshape(b, k * vocab)
        new_scores, flat = lax.top_k(candidates, k)                    # sorted, best first
        parent, token = flat // vocab, flat % vocab
        was_finished = jnp.take_along_axis(finished, parent, axis=1)
        parent_node = jnp.take_along_axis(nodes, parent, axis=1)
        seqs = jnp.take_along_axis(seqs, parent[..., None], axis=1)
        alive = new_scores > -jnp.inf
        token = jnp.where(alive & ~was_finished, token, PAD_ID)
        seqs = jnp.where(alive[..., None], seqs.at[:, :, step].set(token), PAD_ID)
        nodes = jnp.where(was_finished, parent_node, advance(tables, parent_node, token))
        nodes = jnp.where(alive, nodes, -1)
        finished = alive & (was_finished | (token == EOS_ID))
        return seqs, new_scores, nodes, finished

    # Every trie path ends at a leaf within num_steps (= max_depth) steps, so all surviving
    # beams are finished when the loop ends.
    seqs, scores, nodes, finished = lax.fori_loop(0, num_steps, step_fn, init)
    doc = jnp.where(finished, tables.leaf_doc[jnp.maximum(nodes, 0)], -1)
    scores = jnp.where(finished, scores, -jnp.inf)
    return seqs, scores, doc


def positive_int(value: Any, name: str) -> int:
    """`value` as an int, or a clear error unless it is a positive integer (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
