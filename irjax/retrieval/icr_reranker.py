"""ICR, in-context reranking (Chen et al., "Attention in Large Language Models Yields Efficient
Zero-Shot Re-Rankers"): documents are scored by the attention the query pays them.

One prompt holds an instruction, every candidate ("[i] text") and, last, a request naming the
query. A document's raw score is the attention mass that the request's tokens (the late
instruction, the query and the chat suffix) pay to the document's tokens: for each request token
the softmax probabilities summed over all heads and layers, averaged over the request tokens,
summed over the document's tokens. The same request with the content-free query "N/A" measures
what attention a document gets regardless of the query (its position, its length, attention
sinks); subtracting it per token is the calibration. As in the paper's default, calibrated token
scores more than two standard deviations below their document's mean are dropped before summing
(`token_mask`), since a few tokens whose bias is overcorrected would otherwise dominate.

Both requests share everything before them, so the documents are encoded once (a KV cache of
the prefix) and only the two short requests are run on top, batched as two rows; the attention
comes out of DecoderLM.attention_mass, which sums it inside the forward pass instead of
returning [heads, T, T] probabilities per layer. No window slides: all `depth` candidates are in
one prompt (the paper finds ICR worse with windows). Costs: `model_calls` (forward passes: prefix
and request pass per query), `lm_tokens` (prefix + both requests) and `flops`
(decoder_forward_flops of the prefix, and of each request over the cached prefix).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irjax.data.batching import round_up
from irjax.data.runs import Run, rank_documents
from irjax.decoding.lm_generation import left_pad
from irjax.models.compute_budget import decoder_forward_flops
from irjax.models.decoder_lm import DecodeCache, DecoderLM, init_cache
from irjax.retrieval.lm_prompt import InstructLM, build_prompt

CALIBRATION_QUERY = "N/A"
PREFIX_BUCKET = 128
REQUEST_BUCKET = 32
INSTRUCTION = "Here are some paragraphs:"
REQUEST = "Please find information that are relevant to the following query in the paragraphs above."


@functools.partial(jax.jit, static_argnames=("model",), donate_argnames=("cache",))
def _encode_prefix(model: DecoderLM, params: Any, ids: jax.Array, mask: jax.Array,
                   cache: DecodeCache) -> DecodeCache:
    return model.apply({"params": params}, ids, cache, mask, last_only=True,
                       method=DecoderLM.extend)[1]


@functools.partial(jax.jit, static_argnames=("model",))
def _request_mass(model: DecoderLM, params: Any, ids: jax.Array, mask: jax.Array,
                  weights: jax.Array, cache: DecodeCache) -> jax.Array:
    return model.apply({"params": params}, ids, cache, weights, mask,
                       method=DecoderLM.attention_mass)[0]


class ICRReranker:
    """Attention-based in-context reranking (module docstring). `passage_tokens`: each document
    cut to that many tokens; `batch_size` queries per forward pass."""

    def __init__(self, lm: InstructLM, passage_tokens: int = 100, batch_size: int = 1,
                 token_mask: bool = True, name: str | None = None):
        if passage_tokens < 1 or batch_size < 1:
            raise ValueError(f"passage_tokens={passage_tokens} and batch_size={batch_size} must "
                             "be >= 1")
        self.lm, self.passage_tokens, self.batch_size = lm, passage_tokens, batch_size
        self.token_mask = token_mask
        self.name = name or f"icr-{lm.name}"
        self.costs: dict[str, float] = {}

    def prompt(self, query: str, documents: Sequence[str]
               ) -> tuple[list[int], list[tuple[int, int]], list[int], list[int]]:
        """(prefix ids, each document's token span in it, request ids of `query`, request ids
        of the calibration query)."""
        pieces = [f"{self.lm.user_turn_start()}{INSTRUCTION}"]
        for i, text in enumerate(documents):
            pieces += ["\n\n", f"[{i + 1}] {self.lm.cut(text, self.passage_tokens)}"]
        pieces.append("\n\n")
        prefix, spans = build_prompt(self.lm, pieces)
        spans = spans[2:-1:2]  # the documents' own pieces
        request = lambda q: self.lm.encode(  # noqa: E731
            f"{REQUEST}\n\nQuery: {q}{self.lm.assistant_start()}")
        return prefix, spans, request(query), request(CALIBRATION_QUERY)

    def token_scores(self, prefixes: Sequence[Sequence[int]],
                     requests: Sequence[tuple[Sequence[int], Sequence[int]]]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query attention [B, W], calibration attention [B, W], each row's left-pad offset
        [B]) over the prefix tokens of B prompts padded on the left to width W: the request's
        attention mass per prefix token, averaged over the request's tokens."""
        rows = len(prefixes)
        width = round_up(max(map(len, prefixes)), PREFIX_BUCKET)
        request_width = round_up(max(len(r) for pair in requests for r in pair), REQUEST_BUCKET)
        ids, mask = left_pad(prefixes, self.lm.pad_id, width)
        cache = init_cache(self.lm.model.config, rows, width + request_width)
        cache = _encode_prefix(self.lm.model, self.lm.params, jnp.asarray(ids), jnp.asarray(mask),
                               cache)
        flat = [r for pair in requests for r in pair]  # row b -> rows 2b (query), 2b+1 (N/A)
        req_ids, req_mask = left_pad(flat, self.lm.pad_id, request_width)
        weights = req_mask / req_mask.sum(axis=1, keepdims=True)
        mass = _request_mass(self.lm.model, self.lm.params, jnp.asarray(req_ids),
                             jnp.asarray(req_mask), jnp.asarray(weights, jnp.float32),
                             cache.repeat(2))
        mass = np.asarray(mass)[:, :width]
        offsets = width - np.asarray([len(p) for p in prefixes])
        return mass[0::2], mass[1::2], offsets

    def document_scores(self, query_attention: np.ndarray, calibration: np.ndarray,
                        spans: Sequence[tuple[int, int]]) -> np.ndarray:
        """Calibrated score per document span of one prompt's token attention."""
        scores = np.zeros(len(spans), np.float64)
        for i, (start, end) in enumerate(spans):
            calibrated = query_attention[start:end].astype(np.float64) - calibration[start:end]
            if self.token_mask and len(calibrated) > 1:
                calibrated = calibrated[calibrated > calibrated.mean() - 2 * calibrated.std()]
            scores[i] = calibrated.sum()
        return scores

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Calibrated ICR scores of `documents` for one query (prompt order = given order)."""
        prefix, spans, request, calibration = self.prompt(query, documents)
        q_att, na_att, offsets = self.token_scores([prefix], [(request, calibration)])
        shifted = [(s + offsets[0], e + offsets[0]) for s, e in spans]
        return self.document_scores(q_att[0], na_att[0], shifted)

    def rerank(self, queries: Mapping[str, str], candidates: Run,
               documents: Mapping[str, str]) -> Run:
        config = self.lm.model.config
        order = [(qid, [doc for doc, _ in rank_documents(scores)])
                 for qid, scores in candidates.items() if scores]
        run: Run = {qid: {} for qid in candidates}
        calls = tokens = flops = 0.0
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            prompts = [self.prompt(queries[qid], [documents[d] for d in docs])
                       for qid, docs in chunk]
            q_att, na_att, offsets = self.token_scores(
                [p[0] for p in prompts], [(p[2], p[3]) for p in prompts])
            for row, ((qid, docs), (prefix, spans, request, calibration)) in enumerate(
                    zip(chunk, prompts)):
                shifted = [(s + offsets[row], e + offsets[row]) for s, e in spans]
                scores = self.document_scores(q_att[row], na_att[row], shifted)
                run[qid] = {doc: float(s) for doc, s in zip(docs, scores)}
                calls += 2
                tokens += len(prefix) + len(request) + len(calibration)
                flops += (decoder_forward_flops(config, len(prefix), 0, 1)
                          + decoder_forward_flops(config, len(request), len(prefix))
                          + decoder_forward_flops(config, len(calibration), len(prefix)))
        self.costs = {"model_calls": calls, "lm_tokens": tokens, "flops": flops}
        return run


def icr_reranker(lm: str = "smollm2-135m-instruct", passage_tokens: int = 100,
                 batch_size: int = 1, token_mask: bool = True) -> ICRReranker:
    """An ICRReranker over a fetched GGUF instruct model named `lm` (the gin entry point)."""
    return ICRReranker(InstructLM.from_name(lm), passage_tokens, batch_size, token_mask)
