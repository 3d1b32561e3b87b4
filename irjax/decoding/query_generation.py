"""Query generation from documents (docT5query, DSI-QG): a document -> query T5 samples several
queries per document, which become DSI indexing examples (`DSIData.pseudo_queries`) or DSI++
replay data.

    documents --tokenize/pad--> T5 encoder (once per batch) --repeat x num_queries-->
    sampling (top-k / nucleus, jit, one compiled shape) --decode--> doc_id -> [queries]

By default the decoder runs one position per step with T5's key/value cache (`T5.decode_step`;
cross-attention keys/values of the encoder output computed once per batch). `use_cache=False`
recomputes the whole fixed-length prefix each step instead (as DSI decoding does) and samples the
same tokens; it stays to check and benchmark the cache. Either way only position `step` is
projected onto the 32k-way vocabulary, which for a small T5 costs more than a decoder position.

Token rules: pad is never sampled (it is also the decoder start id), nor are ids beyond the
SentencePiece vocabulary (T5 pads its embedding table to 32,128 rows that decode to nothing);
EOS is forbidden before `min_length` tokens, so no query comes out empty of tokens. A sample
that never emits EOS keeps its `max_length` tokens.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from irjax.data.collection import Collection, Document
from irjax.data.tokenization import SentencePieceTokenizer, pad_sequences
from irjax.decoding.constrained_beam_search import positive_int
from irjax.decoding.sampling import sample_sequences, sample_sequences_with_state
from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import PAD_ID, T5, DecodeCache

log = logging.getLogger(__name__)

Documents = Collection | Sequence[Document] | Mapping[str, str]


def _logits_at(module: T5, encoded: jax.Array, inputs_mask: jax.Array,
               decoder_input_ids: jax.Array, step: jax.Array) -> jax.Array:
    """float32 logits [N, V] of decoder position `step` only (T5.decode, one output row)."""
    y = module.decoder(module.embed(decoder_input_ids, True), encoded, inputs_mask, None, True)
    return module.logits(lax.dynamic_index_in_dim(y, step, axis=1, keepdims=True))[:, 0]


def _token_rules(model: Seq2SeqModel, decodable_vocab: int, eos_id: int,
                 min_length: int) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`apply(logits [N, V], step)`: the logits with the tokens the module docstring bans at
    `step` set to -inf."""
    vocab = model.config.vocab_size
    if not 0 < eos_id < decodable_vocab <= vocab:
        raise ValueError(f"need 0 < eos_id ({eos_id}) < decodable_vocab ({decodable_vocab}) <= "
                         f"the model's vocab_size ({vocab})")
    ids = np.arange(vocab)
    never = jnp.asarray((ids == PAD_ID) | (ids >= decodable_vocab))
    is_eos = jnp.asarray(ids == eos_id)

    def apply(logits: jax.Array, step: jax.Array) -> jax.Array:
        banned = never | (is_eos & (step < min_length))
        return jnp.where(banned[None, :], -jnp.inf, logits)

    return apply


@functools.lru_cache(maxsize=16)
def query_log_prob_fn(model: Seq2SeqModel, decodable_vocab: int, eos_id: int,
                      min_length: int) -> Callable[..., jax.Array]:
    """`log_prob_fn(decoder_input_ids, step, context=(params, encoded, inputs_mask))` for
    `sample_sequences`, with the token rules of the module docstring. Cached, because the
    function is a static argument of the compiled sampler: a new one would recompile it."""
    rules = _token_rules(model, decodable_vocab, eos_id, min_length)

    def log_prob_fn(decoder_input_ids: jax.Array, step: jax.Array, context: Any) -> jax.Array:
        params, encoded, inputs_mask = context
        logits = model.module.apply({"params": params}, encoded, inputs_mask, decoder_input_ids,
                                    step, method=_logits_at)
        return rules(logits, step)

    return log_prob_fn


@functools.lru_cache(maxsize=16)
def query_step_fn(model: Seq2SeqModel, decodable_vocab: int, eos_id: int, min_length: int
                  ) -> Callable[..., tuple[jax.Array, Any]]:
    """`step_fn(decoder_input_ids [N], step, state=(params, DecodeCache))` for
    `sample_sequences_with_state`: `query_log_prob_fn`'s logits and token rules, one cached
    decoder position per step. Cached for the same reason."""
    rules = _token_rules(model, decodable_vocab, eos_id, min_length)

    def step_fn(decoder_input_ids: jax.Array, step: jax.Array,
                state: tuple[Any, DecodeCache]) -> tuple[jax.Array, tuple[Any, DecodeCache]]:
        params, cache = state
        logits, cache = model.decode_step(params, cache, decoder_input_ids)
        return rules(logits, step), (params, cache)

    return step_fn


@functools.lru_cache(maxsize=16)
def _jitted_encode(model: Seq2SeqModel) -> Callable[..., jax.Array]:
    return jax.jit(model.encode)


@functools.lru_cache(maxsize=16)
def _jitted_init_cache(model: Seq2SeqModel) -> Callable[..., DecodeCache]:
    return jax.jit(model.init_decode_cache, static_argnames="max_length")


def document_texts(documents: Documents) -> list[tuple[str, str]]:
    """(doc id, text) pairs in order; a Collection or Documents give title + text."""
    if isinstance(documents, Collection):
        documents = documents.documents
    if isinstance(documents, Mapping):
        pairs = [(str(k), v) for k, v in documents.items()]
    else:
        pairs = [(d.doc_id, d.contents) for d in documents]
    seen: set[str] = set()
    for doc_id, text in pairs:
        if doc_id in seen:
            raise ValueError(f"document {doc_id!r} is given twice")
        if not isinstance(text, str):
            raise TypeError(f"document {doc_id!r}: text must be a string, got "
                            f"{type(text).__name__}")
        seen.add(doc_id)
    return pairs


def decode_samples(tokens: np.ndarray, tokenizer: SentencePieceTokenizer) -> list[list[str]]:
    """Sampled ids [B, S, L] -> B lists of S strings: text up to the first EOS, pad dropped,
    surrounding whitespace stripped."""
    tokens = np.asarray(tokens)
    return [[tokenizer.decode(sample).strip() for sample in row] for row in tokens]


def generate_queries(model: Seq2SeqModel, params: Any, documents: Documents,
                     tokenizer: SentencePieceTokenizer, num_queries_per_doc: int = 5, *,
                     top_k: int | None = 10, top_p: float | None = None,
                     temperature: float = 1.0, max_length: int = 32,
                     inputs_max_length: int = 128, batch_size: int = 32, min_length: int = 1,
                     seed: int = 0, log_every: int = 20,
                     use_cache: bool = True) -> dict[str, list[str]]:
    """doc id -> `num_queries_per_doc` sampled queries, in document order.

    Each document is read as its first `inputs_max_length - 1` pieces + EOS (as in training).
    Batches have a fixed `batch_size` (the last one padded by repeating a document), so one
    compiled shape serves all; batch i samples with `fold_in(PRNGKey(seed), i)`, so the output is
    a pure function of (params, documents in order, settings, seed). top_k=1 is greedy. A query can
    still decode to '' if every sampled piece is whitespace; callers may drop those. `use_cache`
    only changes the speed: both decoders sample the same tokens (up to float rounding ties).
    """
    n = positive_int(num_queries_per_doc, "num_queries_per_doc")
    batch_size = positive_int(batch_size, "batch_size")
    max_length = positive_int(max_length, "max_length")
    if not 0 <= min_length <= max_length:
        raise ValueError(f"min_length must be in [0, max_length={max_length}], got {min_length}")
    pairs = document_texts(documents)
    encode = _jitted_encode(model)
    rules = (model, tokenizer.vocab_size, tokenizer.eos_id, min_length)
    if use_cache:
        step_fn, init_cache = query_step_fn(*rules), _jitted_init_cache(model)
    else:
        log_prob_fn = query_log_prob_fn(*rules)
    key = jax.random.PRNGKey(seed)
    params = jax.device_put(params)
    out: dict[str, list[str]] = {}
    start_time = time.perf_counter()
    num_batches = -(-len(pairs) // batch_size)
    for index, start in enumerate(range(0, len(pairs), batch_size)):
        part = pairs[start:start + batch_size]
        seqs = tokenizer.tokenize([text for _, text in part], inputs_max_length)
        seqs += [seqs[0]] * (batch_size - len(seqs))
        batch = pad_sequences(seqs, tokenizer.pad_id, pad_to=inputs_max_length)
        encoded = encode(params, batch.ids, batch.mask)
        encoded, mask = jnp.repeat(encoded, n, axis=0), jnp.repeat(jnp.asarray(batch.mask), n, 0)
        settings = dict(batch_size=batch_size, num_samples=n, max_length=max_length,
                        eos_id=tokenizer.eos_id, top_k=top_k, top_p=top_p,
                        temperature=temperature, rng=jax.random.fold_in(key, index))
        if use_cache:
            state = (params, init_cache(params, encoded, mask, max_length=max_length))
            tokens, _ = sample_sequences_with_state(step_fn, state, **settings)
        else:
            tokens, _ = sample_sequences(log_prob_fn, context=(params, encoded, mask), **settings)
        texts = decode_samples(np.asarray(tokens)[:len(part)], tokenizer)
        out.update((doc_id, queries) for (doc_id, _), queries in zip(part, texts))
        if log_every and ((index + 1) % log_every == 0 or index + 1 == num_batches):
            seconds = time.perf_counter() - start_time
            log.info("generated queries for %d/%d documents (%.1f docs/s)", len(out), len(pairs),
                     len(out) / max(seconds, 1e-9))
    return out
