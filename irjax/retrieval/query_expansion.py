"""LM query expansion in front of any first stage: HyDE (Gao et al. 2022) and GenQREnsemble
(Dhole & Agichtein 2024) are one retriever with different prompts and a different combination.

    query --LMRewriter (one template or an ensemble of templates, n samples each)--> texts
      dense (DenseRetriever): query vector = mean of the encoder's vectors of the query and texts
      sparse (BM25):          query string = the query `query_repeats` times, then the texts

HyDE writes `n` hypothetical passages from one per-collection instruction and encodes them with
the document encoder (they are written to look like documents); GenQREnsemble asks ten
paraphrased instructions for keywords, one answer each, encoded like queries. For BM25, repeating
the original query keeps its terms' weight against the many expansion terms (term frequency in
the query multiplies a term's score).

`timings` adds to the first stage's own: `expansion_ms_per_query` (this run's wall time of
expansion, ~0 when served from the generation cache), `lm_ms_per_query` (wall time of generating
the texts when they were generated), `lm_tokens_per_query`, `flops_per_query`, and
`first_stage_ms_per_query` (retrieval with the expanded queries, without the first stage's
corpus-side work, which is `first_stage_corpus_s`).
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np

from irjax.choices import check_choice
from irjax.data.collection import Collection
from irjax.data.instruction_prompts import genqr_templates, hyde_instruction
from irjax.data.runs import Run
from irjax.decoding.lm_query_generation import SamplingConfig
from irjax.decoding.lm_rewriter import LMRewriter
from irjax.models.dual_encoder import TextEncoder
from irjax.models.weights_dir import gguf_path
from irjax.retrieval.base import Retriever
from irjax.retrieval.bm25 import SparseRetriever
from irjax.retrieval.dense import DenseRetriever
from irjax.retrieval.rerank import query_side_seconds

FIRST_STAGES = ("bm25", "minilm")
SIDES = ("query", "document")


def expanded_query_text(query: str, texts: Sequence[str], query_repeats: int = 1) -> str:
    """The BM25 query: `query` `query_repeats` times, then every non-empty text, one space
    between parts and whitespace inside them collapsed."""
    if query_repeats < 1:
        raise ValueError(f"query_repeats={query_repeats} must be >= 1 (the query is kept)")
    parts = [query] * query_repeats + [t for t in texts if t.strip()]
    return " ".join(" ".join(p.split()) for p in parts)


def mean_vectors(query_vectors: np.ndarray, text_vectors: Sequence[np.ndarray]) -> np.ndarray:
    """[Q, dim]: each query's vector averaged with its texts' vectors ([n_i, dim] each; HyDE's
    v = (f(q) + sum_i f(d_i)) / (n + 1)); a query without texts keeps its own vector."""
    return np.stack([np.concatenate([q[None], t]).mean(0) if len(t) else q
                     for q, t in zip(query_vectors, text_vectors)]).astype(np.float32)


class QueryExpansionRetriever:
    """`first_stage` (a DenseRetriever or a BM25 SparseRetriever) run with queries expanded by
    `rewriter`'s answers to every template in `templates` (module docstring). `side` is the
    encoder the texts go through in the dense case: 'document' (HyDE) or 'query' (GenQR)."""

    def __init__(self, first_stage: Retriever, rewriter: LMRewriter, templates: Sequence[str],
                 query_repeats: int = 1, side: str = "query", name: str | None = None):
        if not templates:
            raise ValueError("QueryExpansionRetriever needs at least one instruction template")
        if not isinstance(first_stage, (DenseRetriever, SparseRetriever)):
            raise ValueError(f"query expansion wraps a DenseRetriever or a SparseRetriever, got "
                             f"{type(first_stage).__name__}")
        check_choice("QueryExpansionRetriever.side", side, SIDES)
        expanded_query_text("", [], query_repeats)  # checks query_repeats now
        self.first_stage, self.rewriter = first_stage, rewriter
        self.templates, self.query_repeats, self.side = list(templates), query_repeats, side
        self.name = name or f"{first_stage.name}+{rewriter.name}x{len(self.templates)}"
        self.timings: dict[str, float] = {}
        self.costs: dict[str, float] = {}
        self.expansions: dict[str, list[str]] = {}

    def expand(self, queries: Mapping[str, str]) -> dict[str, list[str]]:
        """Every query's generated texts, template by template, empty ones dropped."""
        out: dict[str, list[str]] = {qid: [] for qid in queries}
        totals: dict[str, float] = {}
        for template in self.templates:
            for qid, texts in self.rewriter.rewrite(template, queries).items():
                out[qid].extend(t for t in texts if t.strip())
            for key, value in self.rewriter.costs.items():
                totals[key] = totals.get(key, 0.0) + value
        self.costs = totals
        return out

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        self.timings = {}
        start = time.perf_counter()
        self.expansions = self.expand(queries)
        expand_s = time.perf_counter() - start
        start = time.perf_counter()
        if isinstance(self.first_stage, DenseRetriever):
            ids = list(queries)
            query_vectors = self.first_stage.encode_queries([queries[q] for q in ids])
            flat = [t for q in ids for t in self.expansions[q]]
            vectors = (self.first_stage.encode_queries(flat, side=self.side) if flat
                       else np.zeros((0, query_vectors.shape[1]), np.float32))
            bounds = np.cumsum([0] + [len(self.expansions[q]) for q in ids])
            combined = mean_vectors(query_vectors, [vectors[a:b] for a, b in
                                                    zip(bounds[:-1], bounds[1:])])
            run = self.first_stage.search(collection, ids, combined, k)
        else:
            expanded = {qid: expanded_query_text(text, self.expansions[qid], self.query_repeats)
                        for qid, text in queries.items()}
            run = self.first_stage.retrieve(collection, expanded, k)
        first_s = time.perf_counter() - start
        n = max(len(queries), 1)
        self.timings.update({f"first_stage.{key}": value for key, value in
                             getattr(self.first_stage, "timings", {}).items()})
        query_s, corpus_s = query_side_seconds(first_s, self.first_stage)
        self.timings.update({
            "expansion_s": expand_s, "expansion_ms_per_query": 1000 * expand_s / n,
            "first_stage_corpus_s": corpus_s, "first_stage_ms_per_query": 1000 * query_s / n,
            "texts_per_query": sum(map(len, self.expansions.values())) / n})
        for key in ("lm_ms", "lm_tokens", "flops", "generated_rows", "cached_rows"):
            if key in self.costs:
                self.timings[f"{key}_per_query"] = self.costs[key] / n
        return run


def first_stage_retriever(kind: str, index: str = "exact") -> Retriever:
    """The baselines the expansions are measured on: 'bm25' (gin/eval/bm25.gin's settings) or
    'minilm' (zero-shot all-MiniLM-L6-v2, max length 256, as gin/eval/minilm.gin)."""
    check_choice("first_stage_retriever.kind (FIRST_STAGE)", kind, FIRST_STAGES)
    if kind == "bm25":
        return SparseRetriever(name="bm25")
    return DenseRetriever(TextEncoder.from_pretrained(max_length=256), index=index)


def lm_rewriter(lm: str, sampling: SamplingConfig, cache_dir: str | None = None) -> LMRewriter:
    """An instruct LM by its weights-cache name (e.g. 'smollm2-135m-instruct') or GGUF path."""
    path = lm if lm.endswith(".gguf") else gguf_path(lm)
    return LMRewriter.from_gguf(path, sampling, cache_dir=cache_dir)


def hyde_retriever(first_stage: str, lm: str, task: str, passages: int = 4,
                   max_new_tokens: int = 96, temperature: float = 0.7, batch_size: int = 32,
                   seed: int = 0, index: str = "exact", cache_dir: str | None = None,
                   query_repeats: int = 1) -> QueryExpansionRetriever:
    """HyDE: `passages` sampled hypothetical passages (the paper samples 8 at temperature 0.7)
    from the instruction of `task` (a collection name, irjax.data.instruction_prompts)."""
    sampling = SamplingConfig(queries_per_document=passages, batch_size=batch_size,
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=None, seed=seed)
    rewriter = lm_rewriter(lm, sampling, cache_dir)
    return QueryExpansionRetriever(first_stage_retriever(first_stage, index), rewriter,
                                   [hyde_instruction(task)], query_repeats=query_repeats,
                                   side="document", name=f"hyde:{first_stage}+{rewriter.name}")


def genqr_retriever(first_stage: str, lm: str, instructions: int = 10, max_new_tokens: int = 32,
                    query_repeats: int = 5, greedy: bool = True, temperature: float = 0.7,
                    batch_size: int = 32, seed: int = 0, index: str = "exact",
                    cache_dir: str | None = None) -> QueryExpansionRetriever:
    """GenQREnsemble: the first `instructions` paraphrased keyword instructions, one answer each
    (greedy by default: the ensemble's diversity comes from the instructions)."""
    sampling = SamplingConfig(queries_per_document=1, batch_size=batch_size,
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=None, greedy=greedy, seed=seed)
    rewriter = lm_rewriter(lm, sampling, cache_dir)
    return QueryExpansionRetriever(first_stage_retriever(first_stage, index), rewriter,
                                   genqr_templates(instructions), query_repeats=query_repeats,
                                   side="query", name=f"genqr:{first_stage}+{rewriter.name}")
