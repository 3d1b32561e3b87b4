"""FIRST (Reddy et al. 2024): listwise reranking with an instruct LM from its first output token.

The LM sees the query and a window of passages labelled [A], [B], ..., and is asked to list the
identifiers from most to least relevant. Instead of generating that list (RankGPT), FIRST reads
the logits of the *first* token of the answer over the window's identifier tokens and sorts the
passages by them: one forward pass per window, no decoding loop. Identifiers are single tokens of
the model's tokenizer (checked at construction); the answer format asks for bare letters
("C > A > B") so that the first answer token is an identifier itself, whatever the tokenizer does
with "[A" (Qwen2.5 merges it into one token, SmolLM2 does not).

Windows slide as in RankGPT/FIRST: from the bottom of a query's candidate list to the top
(`window_spans`), each window reordered in place, so that a relevant passage found low in the list
is carried up by the overlapping windows. Unlike RankGPT's loop, the last window always starts at
the top, so every candidate is judged even when (n - window) is not a multiple of the stride.
The final order becomes rank scores (n - position).

Prompts of all queries' k-th windows are batched together (rows padded on the left to a multiple
of `LENGTH_BUCKET` ids, batches to `batch_size` rows) so the jitted forward pass compiles once per
bucket. Costs: `model_calls` (windows), `lm_tokens` (prompt tokens; nothing is generated) and
`flops` (irjax.models.compute_budget.decoder_forward_flops with one vocabulary projection).
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
from irjax.models.decoder_lm import DecoderLM
from irjax.retrieval.lm_prompt import InstructLM, build_prompt

IDENTIFIERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LENGTH_BUCKET = 128


def window_spans(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) windows over ranks 0..n-1 in processing order: the first ends at n, each
    next one `stride` higher, the last starts at 0 (clamped, so it may overlap more)."""
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window={window}, "
                         f"stride={stride}")
    spans: list[tuple[int, int]] = []
    end = n
    while n > 0:
        start = max(end - window, 0)
        spans.append((start, end))
        if start == 0:
            break
        end -= stride
    return spans


@functools.partial(jax.jit, static_argnames=("model",))
def _next_token_logits(model: DecoderLM, params: Any, ids: jax.Array, mask: jax.Array,
                       choices: jax.Array) -> jax.Array:
    """float32 [B, len(choices)]: the logits of the token after each left-padded prompt, at the
    `choices` ids only."""
    def last(module: DecoderLM, ids: jax.Array, mask: jax.Array) -> jax.Array:
        return module.logits(module.hidden(ids, mask)[:, -1])

    logits = model.apply({"params": params}, ids, mask, method=last)
    return logits[:, choices]


class FirstReranker:
    """Single-token listwise reranking (module docstring). `passage_tokens`: each passage cut to
    that many tokens; `window` <= 26 passages per prompt, `stride` ranks between windows."""

    def __init__(self, lm: InstructLM, window: int = 20, stride: int = 10,
                 passage_tokens: int = 100, batch_size: int = 1, name: str | None = None):
        if not 1 <= window <= len(IDENTIFIERS):
            raise ValueError(f"window={window}: between 1 and {len(IDENTIFIERS)} passages (one "
                             "letter identifier each)")
        window_spans(window, window, stride)  # validates stride
        if passage_tokens < 1 or batch_size < 1:
            raise ValueError(f"passage_tokens={passage_tokens} and batch_size={batch_size} must "
                             "be >= 1")
        self.lm, self.window, self.stride = lm, window, stride
        self.passage_tokens, self.batch_size = passage_tokens, batch_size
        self.name = name or f"first-{lm.name}-w{window}s{stride}"
        self.identifier_ids = [lm.single_token(c) for c in IDENTIFIERS[:window]]
        if len(set(self.identifier_ids)) != window:
            raise ValueError(f"identifiers {IDENTIFIERS[:window]} share token ids in "
                             f"{lm.name}'s tokenizer")
        self.costs: dict[str, float] = {}

    def prompt(self, query: str, passages: Sequence[str]) -> list[int]:
        """Token ids of one window's prompt, ending where the answer's first token goes."""
        k = len(passages)
        labels = IDENTIFIERS[:k]
        head = (f"{self.lm.user_turn_start()}I will give you {k} passages, each labelled with "
                f"an identifier in brackets. Rank them by how relevant they are to the search "
                f"query: {query}\n")
        pieces = [head] + [f"\n[{label}] {self.lm.cut(text, self.passage_tokens)}"
                           for label, text in zip(labels, passages)]
        example = " > ".join(labels[:min(k, 3)])
        pieces.append(f"\n\nSearch query: {query}\nRank the {k} passages above from most to "
                      f"least relevant to the search query. Answer with the identifiers only, "
                      f"without brackets, in the format {example}."
                      f"{self.lm.assistant_start()}")
        return build_prompt(self.lm, pieces)[0]

    def window_logits(self, prompts: Sequence[Sequence[int]]) -> np.ndarray:
        """float32 [len(prompts), window]: first-token logits over the identifiers, in batches
        of `batch_size` rows (the last padded with copies so every call has one shape)."""
        choices = jnp.asarray(np.asarray(self.identifier_ids, np.int32))
        out = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start:start + self.batch_size])
            rows = len(chunk)
            chunk += [chunk[0]] * (self.batch_size - rows)
            width = round_up(max(len(p) for p in chunk), LENGTH_BUCKET)
            ids, mask = left_pad(chunk, self.lm.pad_id, width)
            logits = _next_token_logits(self.lm.model, self.lm.params, jnp.asarray(ids),
                                        jnp.asarray(mask), choices)
            out.append(np.asarray(logits)[:rows])
        return np.concatenate(out) if out else np.zeros((0, self.window), np.float32)

    def rerank(self, queries: Mapping[str, str], candidates: Run,
               documents: Mapping[str, str]) -> Run:
        order = {qid: [doc for doc, _ in rank_documents(scores)]
                 for qid, scores in candidates.items()}
        plans = {qid: window_spans(len(docs), self.window, self.stride)
                 for qid, docs in order.items()}
        config = self.lm.model.config
        calls = tokens = flops = 0.0
        for step in range(max((len(p) for p in plans.values()), default=0)):
            jobs = [(qid, plans[qid][step]) for qid in order if step < len(plans[qid])]
            prompts = [self.prompt(queries[qid], [documents[d] for d in order[qid][s:e]])
                       for qid, (s, e) in jobs]
            logits = self.window_logits(prompts)
            for (qid, (s, e)), row in zip(jobs, logits):
                ranking = np.argsort(-row[:e - s], kind="stable")
                order[qid][s:e] = [order[qid][s + i] for i in ranking]
            calls += len(jobs)
            tokens += sum(len(p) for p in prompts)
            flops += sum(decoder_forward_flops(config, len(p), 0, 1) for p in prompts)
        self.costs = {"model_calls": calls, "lm_tokens": tokens, "flops": flops}
        return {qid: {doc: float(len(docs) - rank) for rank, doc in enumerate(docs)}
                for qid, docs in order.items()}


def first_reranker(lm: str = "smollm2-135m-instruct", window: int = 20, stride: int = 10,
                   passage_tokens: int = 100, batch_size: int = 1) -> FirstReranker:
    """A FirstReranker over a fetched GGUF instruct model named `lm` (the gin entry point)."""
    return FirstReranker(InstructLM.from_name(lm), window, stride, passage_tokens, batch_size)
