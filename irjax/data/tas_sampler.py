"""TAS-Balanced sampling (Hofstätter et al., SIGIR 2021): topic-aware batches, balanced margins.

In-batch negatives only teach something when they are hard to tell apart from the positive, and a
random batch mixes unrelated topics whose documents are trivially wrong. TAS clusters the training
queries once with k-means over their embeddings (callers supply them, e.g. from the zero-shot
encoder) and draws every batch from a single cluster, so the other queries' positives are on-topic.
"Balanced" then picks each query's hard negative so that the teacher margins
score(q, pos) - score(q, neg) are spread evenly: the query's candidate margins are cut into
`num_bins` equal-width bins, a non-empty bin is drawn uniformly and a negative uniformly inside it.
Without this, most negatives have large, easy margins.

Everything is a pure function of the seed (and epoch/step), so runs and resumptions repeat exactly.
A batch samples its cluster with probability proportional to its number of queries, so every
query is expected to be visited equally often; unlike the random sampler an epoch is a number of
batches, not a guaranteed single pass over the pairs.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

_CHUNK = 4096  # points per distance block, to bound memory at chunk * k floats


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray  # float64 [k, d]
    assignments: np.ndarray  # int64 [n], cluster of each point
    inertia: float  # sum of squared distances to the assigned centroid


def _squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    out = np.empty((len(points), len(centroids)))
    c_norm = (centroids ** 2).sum(1)
    for start in range(0, len(points), _CHUNK):
        block = points[start:start + _CHUNK]
        d = (block ** 2).sum(1)[:, None] - 2.0 * block @ centroids.T + c_norm[None, :]
        out[start:start + _CHUNK] = np.maximum(d, 0.0)
    return out


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Seeds centroids far apart (D^2 sampling), which makes a few Lloyd steps enough."""
    chosen = [int(rng.integers(len(points)))]
    closest = _squared_distances(points, points[chosen]).min(1)
    for _ in range(1, k):
        total = closest.sum()
        if total > 0:
            index = int(rng.choice(len(points), p=closest / total))
        else:  # every point coincides with a centroid: any unused point will do
            unused = np.setdiff1d(np.arange(len(points)), chosen)
            index = int(rng.choice(unused))
        chosen.append(index)
        closest = np.minimum(closest, _squared_distances(points, points[[index]])[:, 0])
    return points[chosen].copy()


def kmeans(points: np.ndarray, k: int, seed: int, iterations: int = 10) -> KMeansResult:
    """k-means++ initialisation then `iterations` Lloyd steps; identical results for a seed.

    An emptied cluster is re-seeded with the point farthest from its centroid, so k clusters stay k.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"points must be a non-empty [n, d] array, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points contain NaN or infinite values")
    if not 1 <= k <= len(points):
        raise ValueError(f"k must be in [1, {len(points)}] (the number of points), got {k}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    rng = np.random.default_rng(seed)
    centroids = _kmeans_plus_plus(points, k, rng)
    for _ in range(iterations):
        distances = _squared_distances(points, centroids)
        assignments = distances.argmin(1)
        own = distances[np.arange(len(points)), assignments]
        for c in range(k):
            members = assignments == c
            if members.any():
                centroids[c] = points[members].mean(0)
            else:
                far = int(own.argmax())
                centroids[c], own[far] = points[far], 0.0
    distances = _squared_distances(points, centroids)
    assignments = distances.argmin(1)
    inertia = float(distances[np.arange(len(points)), assignments].sum())
    return KMeansResult(centroids, assignments.astype(np.int64), inertia)


def cluster_queries(query_ids: Sequence[str], embeddings: np.ndarray, num_clusters: int, seed: int,
                    min_cluster_size: int = 1, iterations: int = 10) -> dict[str, int]:
    """query id -> cluster, with clusters smaller than `min_cluster_size` merged into their nearest.

    A batch of B distinct queries needs a cluster of at least B queries, so pass the global batch
    size as `min_cluster_size`; merging (smallest first, into the nearest centroid) keeps every
    query trainable instead of dropping the ones in tiny clusters. Labels are renumbered 0..m-1.
    """
    embeddings = np.asarray(embeddings)
    if len(query_ids) != len(embeddings):
        raise ValueError(f"got {len(query_ids)} query ids but {len(embeddings)} embeddings")
    if len(set(query_ids)) != len(query_ids):
        raise ValueError("query ids must be unique")
    if min_cluster_size > len(query_ids):
        raise ValueError(f"min_cluster_size={min_cluster_size} exceeds the {len(query_ids)} queries")
    result = kmeans(embeddings, num_clusters, seed, iterations)
    labels = result.assignments.copy()
    centroids = {c: result.centroids[c] for c in range(num_clusters)}
    sizes = {c: int((labels == c).sum()) for c in range(num_clusters)}
    merged = 0
    for c in list(sizes):  # kmeans may still leave a cluster empty when points coincide
        if sizes[c] == 0:
            del sizes[c], centroids[c]
    while len(sizes) > 1 and min(sizes.values()) < min_cluster_size:
        small = min(sizes, key=lambda c: (sizes[c], c))
        others = [c for c in sizes if c != small]
        gaps = [float(((centroids[c] - centroids[small]) ** 2).sum()) for c in others]
        target = others[int(np.argmin(gaps))]
        total = sizes[small] + sizes[target]
        centroids[target] = (centroids[target] * sizes[target] + centroids[small] * sizes[small]) / total
        labels[labels == small] = target
        sizes[target] = total
        del sizes[small], centroids[small]
        merged += 1
    renumber = {old: new for new, old in enumerate(sorted(sizes))}
    if merged:
        log.info("TAS: merged %d of %d k-means clusters smaller than %d queries; %d remain",
                 merged, num_clusters, min_cluster_size, len(renumber))
    return {qid: renumber[int(label)] for qid, label in zip(query_ids, labels)}


def margin_bins(margins: np.ndarray, num_bins: int) -> np.ndarray:
    """Equal-width bin (0..num_bins-1) of each margin over the margins' own [min, max] range."""
    margins = np.asarray(margins, dtype=np.float64)
    low, high = float(margins.min()), float(margins.max())
    if high <= low:
        return np.zeros(len(margins), dtype=np.int64)
    scaled = (margins - low) / (high - low) * num_bins
    return np.minimum(scaled.astype(np.int64), num_bins - 1)


def balanced_choice(rng: np.random.Generator, margins: np.ndarray, n: int, num_bins: int) -> np.ndarray:
    """Indices of `n` distinct candidates: each draw picks a non-empty margin bin uniformly, then a
    candidate uniformly inside it, so small and large teacher margins are equally represented."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if n > len(margins):
        raise ValueError(f"cannot choose {n} distinct negatives from {len(margins)} candidates")
    bins = margin_bins(margins, num_bins)
    members = [list(np.flatnonzero(bins == b)) for b in range(num_bins)]
    chosen = []
    for _ in range(n):
        open_bins = [b for b in range(num_bins) if members[b]]
        bucket = members[open_bins[int(rng.integers(len(open_bins)))]]
        chosen.append(int(bucket.pop(int(rng.integers(len(bucket))))))
    return np.asarray(chosen, dtype=np.int64)


class TASBalancedSampler:
    """Global batches of distinct queries, each batch from one cluster, one positive per query."""

    def __init__(self, pair_queries: np.ndarray, query_clusters: np.ndarray, batch_size: int,
                 seed: int):
        """`pair_queries[p]` is the query index of pair p; `query_clusters[q]` the cluster of query q."""
        pair_queries = np.asarray(pair_queries, dtype=np.int64)
        query_clusters = np.asarray(query_clusters, dtype=np.int64)
        if len(pair_queries) and (pair_queries.min() < 0 or pair_queries.max() >= len(query_clusters)):
            raise ValueError("pair_queries holds a query index outside query_clusters")
        self.batch_size, self.seed = batch_size, seed
        self.pairs_of = [np.flatnonzero(pair_queries == q) for q in range(len(query_clusters))]
        has_pairs = np.array([len(p) > 0 for p in self.pairs_of], dtype=bool)
        labels = np.unique(query_clusters)
        self.clusters = [np.flatnonzero((query_clusters == c) & has_pairs) for c in labels]
        sizes = np.array([len(c) for c in self.clusters])
        if (sizes < batch_size).any():
            small = [(int(labels[i]), int(s)) for i, s in enumerate(sizes) if s < batch_size]
            raise ValueError(f"TAS needs every cluster to hold at least batch_size={batch_size} "
                             f"queries with pairs; (cluster, size) {small[:5]} are smaller. Build "
                             f"the clusters with cluster_queries(..., min_cluster_size={batch_size})")
        self.probabilities = sizes / sizes.sum()

    def cluster_of_batch(self, epoch: int, step: int) -> int:
        return int(self._rng(epoch, step).choice(len(self.clusters), p=self.probabilities))

    def _rng(self, epoch: int, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, step, 7])

    def batch(self, epoch: int, step: int) -> np.ndarray:
        """Pair indices [batch_size] of one batch: distinct queries from one sampled cluster."""
        rng = self._rng(epoch, step)
        cluster = self.clusters[int(rng.choice(len(self.clusters), p=self.probabilities))]
        queries = rng.choice(cluster, self.batch_size, replace=False)
        return np.array([self.pairs_of[q][rng.integers(len(self.pairs_of[q]))] for q in queries],
                        dtype=np.int64)
