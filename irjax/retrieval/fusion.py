"""Score fusion of ranked lists whose scores live on different scales (BM25 vs cosine vs a
cross-encoder's logits): each list is min-max normalised to [0, 1] before lists are combined.
Used by PromptReps' dense+sparse hybrid and by `InterpolatedReranker` (first stage + reranker)."""
from __future__ import annotations

from typing import Mapping


def min_max_normalised(scores: Mapping[str, float]) -> dict[str, float]:
    """One query's scores mapped to [0, 1] over the list (best 1, worst 0); a list whose scores
    are all equal maps to 1 each, so a one-document list keeps its full weight."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {d: (s - low) / span if span > 0 else 1.0 for d, s in scores.items()}
