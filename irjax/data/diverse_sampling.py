"""DUQGen's diversity controls (Chandradevan et al., 2024): cluster the corpus, then spread both
the few-shot examples and the documents to generate for over the clusters.

A few-shot prompt whose examples all come from one topic teaches the LM that topic's query style
only, and generating for a random sample of a skewed corpus repeats its dominant topics. So:

* `pick_examples`: k labelled (document, query) pairs whose documents lie in k *distinct*
  clusters (the largest clusters first; one random labelled document per cluster), optionally
  only queries of at least `min_words` words: the LM copies the examples' form, and a collection
  whose labels mix one-word topics with sentence-like questions (NFCorpus) otherwise teaches it
  one-word queries that rarely single out their document;
* `spread_documents`: n documents dealt round-robin over the clusters (random order inside each
  cluster), so every cluster contributes until it runs out.

Clusters come from k-means (irjax/data/tas_sampler.py) over document embeddings the caller
supplies (zero-shot MiniLM in the generate_queries job). Everything is a pure function of the
seed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from irjax.data.tas_sampler import kmeans


def cluster_documents(embeddings: np.ndarray, num_clusters: int, seed: int) -> np.ndarray:
    """int64 [n]: each document's k-means cluster (k capped at the number of documents)."""
    return kmeans(embeddings, min(num_clusters, len(embeddings)), seed).assignments


def _members(assignments: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    """Rows of each cluster in random order, clusters largest first (ties: lower label)."""
    labels = np.unique(assignments)
    groups = [list(rng.permutation(np.flatnonzero(assignments == c))) for c in labels]
    order = sorted(range(len(groups)), key=lambda g: (-len(groups[g]), int(labels[g])))
    return [groups[g] for g in order]


def pick_examples(doc_ids: Sequence[str], assignments: np.ndarray,
                  labelled: Mapping[str, Sequence[str]], k: int, seed: int,
                  min_words: int = 1) -> list[tuple[str, str]]:
    """k (doc_id, query) pairs, each document from a different cluster.

    `labelled`: doc_id -> its labelled queries (the train split's positives); only queries of at
    least `min_words` whitespace-separated words count. Clusters without such a labelled document
    are skipped; when fewer than k clusters have one, the error says so (lower k or min_words, or
    use more clusters)."""
    if k < 1:
        raise ValueError(f"k (few-shot examples) must be >= 1, got {k}")
    if min_words < 1:
        raise ValueError(f"min_words must be >= 1, got {min_words}")
    eligible = {d: [q for q in qs if len(q.split()) >= min_words] for d, qs in labelled.items()}
    if len(doc_ids) != len(assignments):
        raise ValueError(f"{len(doc_ids)} doc ids but {len(assignments)} cluster assignments")
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, str]] = []
    for rows in _members(np.asarray(assignments), rng):
        candidates = [doc_ids[r] for r in rows if eligible.get(doc_ids[r])]
        if candidates:
            doc_id = candidates[0]
            queries = eligible[doc_id]
            chosen.append((doc_id, queries[int(rng.integers(len(queries)))]))
            if len(chosen) == k:
                return chosen
    raise ValueError(f"only {len(chosen)} clusters hold a labelled document (with a query of >= "
                     f"{min_words} words) but k={k} few-shot examples from distinct clusters were "
                     "asked for: lower the number of examples or min_words, or raise the number "
                     "of clusters")


def spread_documents(doc_ids: Sequence[str], assignments: np.ndarray, count: int | None,
                     seed: int, exclude: Sequence[str] = ()) -> list[str]:
    """`count` doc ids dealt round-robin over the clusters (all of them when count is None),
    leaving out `exclude` (the few-shot examples' documents)."""
    if len(doc_ids) != len(assignments):
        raise ValueError(f"{len(doc_ids)} doc ids but {len(assignments)} cluster assignments")
    skip = set(exclude)
    groups = [[doc_ids[r] for r in rows if doc_ids[r] not in skip]
              for rows in _members(np.asarray(assignments), np.random.default_rng(seed))]
    total = sum(len(g) for g in groups)
    count = total if count is None else min(count, total)
    out: list[str] = []
    depth = 0
    while len(out) < count:
        for group in groups:
            if depth < len(group) and len(out) < count:
                out.append(group[depth])
        depth += 1
    return out
