"""Generative retrieval (DSI) as a `Retriever`: a query is encoded by T5, docids are decoded by
trie-constrained beam search, and the ranked docids become a run for the usual evaluation.

Only valid docids can come out (`DocidTrie` masks every step), and each comes with its sequence
log-probability, so a run holds up to `beam_size` documents per query: R@10 (= Hits@10), RR@10
and nDCG@10 are meaningful with beam_size >= 10, deeper cut-offs need a wider beam.
"""
from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from irjax.data.collection import Collection
from irjax.data.docids import DocidScheme
from irjax.data.tokenization import SentencePieceTokenizer, pad_sequences
from irjax.decoding.constrained_beam_search import constrained_beam_search
from irjax.data.runs import Run
from irjax.index.docid_trie import DocidTrie
from irjax.models.seq2seq import Seq2SeqModel
from irjax.parallel.processes import allgather_json, host_copy, process_shard


class GenerativeRetriever:
    """DSI retrieval over the docids of `scheme`; see the module docstring."""

    def __init__(self, model: Seq2SeqModel, params: Any, scheme: DocidScheme,
                 tokenizer: SentencePieceTokenizer | None = None, beam_size: int = 20,
                 batch_size: int = 32, inputs_max_length: int = 64, name: str = "dsi",
                 doc_ids: list[str] | None = None):
        if scheme.vocab_size > model.config.vocab_size:
            raise ValueError(f"docid scheme needs a vocabulary of {scheme.vocab_size} but the model "
                             f"has {model.config.vocab_size}; build the model with the scheme's size")
        self.model = model
        self.params = jax.device_put(host_copy(params))
        self.scheme = scheme
        self.tokenizer = tokenizer or SentencePieceTokenizer()
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.inputs_max_length = inputs_max_length
        self.name = name
        self.timings: dict[str, float] = {}
        # Restricting to `doc_ids` (e.g. the documents indexed so far in continual indexing)
        # builds the trie over those docids only.
        allowed = scheme.doc_ids if doc_ids is None else doc_ids
        self._allowed = list(allowed)
        self.trie = DocidTrie.build([scheme.docid_tokens(d) for d in self._allowed],
                                    model.config.vocab_size)
        # Queries are encoded, and the encoder states projected to every decoder layer's
        # cross-attention keys and values, once per query; beams share them.
        self._cross_kv = jax.jit(lambda params, ids, mask: model.cross_keys_values(
            params, model.encode(params, ids, mask)))
        self._log_prob_fn = _make_log_prob_fn(model)

    def rank(self, texts: list[str]) -> list[list[tuple[str, float]]]:
        """Per text, (doc id, log-probability) of up to beam_size docids, best first."""
        out: list[list[tuple[str, float]]] = []
        b, beam = self.batch_size, self.beam_size
        seqs = self.tokenizer.tokenize(texts, self.inputs_max_length)
        for start in range(0, len(seqs), b):
            part = seqs[start : start + b]
            batch = pad_sequences(part + [part[0]] * (b - len(part)), self.tokenizer.pad_id,
                                  pad_to=self.inputs_max_length)
            cross_kv = self._cross_kv(self.params, batch.ids, batch.mask)
            context = (self.params, jax.tree.map(lambda a: jnp.repeat(a, beam, axis=0), cross_kv),
                       jnp.repeat(jnp.asarray(batch.mask), beam, axis=0))
            _, scores, doc_index = constrained_beam_search(self._log_prob_fn, self.trie, b, beam,
                                                           context=context)
            scores, doc_index = np.asarray(scores), np.asarray(doc_index)
            for row in range(len(part)):
                out.append([(self._allowed[int(d)], float(s))
                            for d, s in zip(doc_index[row], scores[row]) if d >= 0])
        return out

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        """Each process decodes its contiguous share of the queries; the ranked lists are
        gathered, so every process returns the whole run (the one-process run)."""
        self.scheme.check_documents(collection)
        texts = list(queries.values())
        start = time.perf_counter()
        self.rank(texts[:1])   # compiles encoder and beam search; throughput excludes it
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        share = process_shard(len(texts))
        ranked = [[tuple(pair) for pair in docs] for part in allgather_json(
            [[list(pair) for pair in docs] for docs in self.rank(texts[share])]) for docs in part]
        seconds = time.perf_counter() - start
        self.timings.update(compile_s=warmup, decode_s=seconds,
                            queries_per_s=len(queries) / max(seconds, 1e-9),
                            processes=jax.process_count())
        return {qid: dict(docs[:k]) for qid, docs in zip(queries, ranked)}


@functools.lru_cache(maxsize=8)
def _make_log_prob_fn(model: Seq2SeqModel):
    """One long-lived function (a static argument of the compiled search): the decoder over the
    whole 0-padded prefix, cross-attending over the query's precomputed keys and values, its
    output layer at position `step` only. Docids are a few tokens long, so recomputing the prefix
    each step costs less than managing a self-attention cache."""

    def log_prob_fn(decoder_input_ids: jax.Array, step: jax.Array, context: Any) -> jax.Array:
        params, cross_kv, mask = context
        return model.decode_at_cross(params, cross_kv, mask, decoder_input_ids, step)   # [N, V]

    return log_prob_fn
