"""Promptagator's round-trip consistency filter: a generated query is kept only when a retriever
ranks the document it was generated from within its top `depth`.

Few-shot LMs write many queries that are too generic ("what are the effects of treatment?") or
about something the document does not say; a query whose own document the current retriever
cannot find among the first few is, more often than not, one of those (Dai et al., 2022, keep
top-1 on most BEIR sets). `round_trip_ranks` works on any run, so it is tested against a
hand-made ranking; `round_trip_filter` runs the retriever (zero-shot MiniLM in the
generate_queries job) first.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from irjax.data.collection import Collection
from irjax.data.runs import rank_documents


def round_trip_ranks(run: Mapping[str, Mapping[str, float]],
                     sources: Mapping[str, str]) -> dict[str, int | None]:
    """query id -> 1-based rank of its source document in `run` (None: not retrieved).

    Ranks follow `rank_documents` (score descending, ties by descending doc id), trec_eval's order."""
    out: dict[str, int | None] = {}
    for query_id, doc_id in sources.items():
        ranked = [d for d, _ in rank_documents(run.get(query_id, {}))]
        out[query_id] = ranked.index(doc_id) + 1 if doc_id in ranked else None
    return out


def keep_flags(ranks: Mapping[str, int | None], depth: int) -> dict[str, bool]:
    """query id -> whether its source document ranks within the top `depth`."""
    if depth < 1:
        raise ValueError(f"round-trip depth must be >= 1, got {depth}")
    return {q: r is not None and r <= depth for q, r in ranks.items()}


def round_trip_filter(retriever: Any, collection: Collection, queries: Mapping[str, str],
                      sources: Mapping[str, str], depth: int) -> dict[str, int | None]:
    """Ranks of each query's source document under `retriever` (searched to `depth`)."""
    if set(queries) != set(sources):
        raise ValueError("queries and sources must have the same query ids")
    if depth < 1:
        raise ValueError(f"round-trip depth must be >= 1, got {depth}")
    run = retriever.retrieve(collection, dict(queries), depth)
    return round_trip_ranks(run, sources)
