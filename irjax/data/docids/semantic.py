"""Semantic docids (DSI; NCI): paths in a hierarchical k-means tree over document embeddings.

Documents are clustered into `num_clusters` (c) groups; every group with more than
`max_leaf_size` documents is clustered again, recursively. A docid is the path of cluster indices
from the root followed by the document's position inside its leaf, so documents with similar
embeddings share docid prefixes and the decoder's first steps choose a topic before a document.
Leaves hold at most `max_leaf_size` documents (default c), and docids are prefix-free (a node is
either split or a leaf), so EOS is never needed to tell two documents apart.

Tokens: by default the alphabet of k = max(c, max_leaf_size) new tokens is shared by all levels
(DSI); `per_level_tokens=True` gives each level its own k tokens (NCI's position-aware prefix
tokens), so the same cluster index at different depths decodes to different tokens.

The k-means is plain numpy and deterministic given `seed`: k-means++ initialisation and Lloyd
iterations, with a random generator seeded from (seed, node path) so a node's split does not
depend on the order the tree is built in. A cluster that comes out empty is re-seeded at the
point farthest from its centre; a node that still does not split (e.g. duplicate embeddings) is
cut into c even parts of its points sorted along their first principal direction (counted in
`stats["fallback_splits"]`).

Prefix-balanced variant (`balanced=True`): every split cuts its documents into c clusters of
equal size (at most one apart; balanced k-means: Lloyd steps whose assignment fills each centre up
to ceil(n / c), closest pairs first), so every docid prefix covers as many documents as its
siblings, all docids have (nearly) the same length, and no first token stands for a giant
cluster -- plain k-means over embeddings often makes a few huge clusters and many tiny ones.

Embeddings come from elsewhere (e.g. the dual encoder); pass them
in corpus order, one row per document.
"""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Any

import numpy as np

from irjax.data.docids.base import T5_BASE_VOCAB_SIZE, DocIds, DocidError, DocidScheme, resolve_doc_ids

log = logging.getLogger(__name__)


def _sq_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [n, k], clipped at 0 against rounding."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _tolerance(x: np.ndarray) -> float:
    """Squared distances below this are rounding noise: duplicate points count as equal."""
    return 1e-10 * float((x * x).sum(1).max()) + 1e-300


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, tol: float) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to D(x)^2."""
    centres = [x[rng.integers(len(x))]]
    closest = _sq_distances(x, centres[0][None])[:, 0]
    for _ in range(1, k):
        closest[closest <= tol] = 0.0
        total = closest.sum()
        index = rng.choice(len(x), p=closest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[index])
        closest = np.minimum(closest, _sq_distances(x, x[index][None])[:, 0])
    return np.stack(centres)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 20) -> np.ndarray:
    """Cluster labels [n] in [0, k) from k-means++ and at most `iterations` Lloyd steps."""
    k, tol = min(k, len(x)), _tolerance(x)
    centres = _kmeans_pp(x, k, rng, tol)
    labels = np.full(len(x), -1, dtype=np.int64)
    for _ in range(iterations):
        distances = _sq_distances(x, centres)
        new_labels = distances.argmin(1)
        for empty in np.setdiff1d(np.arange(k), new_labels):  # re-seed at the worst-fit point
            fit = distances[np.arange(len(x)), new_labels]
            worst = int(fit.argmax())
            if fit[worst] <= tol:  # every point sits on a centre (duplicates): leave it empty
                break
            new_labels[worst] = empty
            distances[worst] = np.inf  # never move the same point twice
            distances[worst, empty] = 0.0
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, x)
        sizes = np.bincount(labels, minlength=k)
        centres = np.where(sizes[:, None] > 0, sums / np.maximum(sizes, 1)[:, None], centres)
    return labels


def _even_split(x: np.ndarray, parts: int) -> list[np.ndarray]:
    """`parts` near-equal groups of row indices, cut along the first principal direction."""
    centred = x - x.mean(0)
    if np.any(centred):
        direction = np.linalg.svd(centred, full_matrices=False)[2][0]
        order = np.argsort(centred @ direction, kind="stable")
    else:
        order = np.arange(len(x))
    return [g for g in np.array_split(order, parts) if len(g)]


def balanced_assignment(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Labels [n] giving each of the k clusters floor(n / k) or ceil(n / k) points: (point,
    centre) pairs are taken closest first, each point going to the first centre with room left
    (the n mod k larger clusters are the ones that fill first)."""
    n, k = len(x), len(centres)
    floor, extra = divmod(n, k)
    order = np.argsort(_sq_distances(x, centres), axis=None, kind="stable")
    labels = np.full(n, -1, dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    left = n
    for flat in order.tolist():
        i, j = divmod(flat, k)
        if labels[i] >= 0:
            continue
        if load[j] < floor or (load[j] == floor and extra > 0):
            extra -= int(load[j] == floor)
            labels[i] = j
            load[j] += 1
            left -= 1
            if not left:
                break
    return labels


def balanced_kmeans(x: np.ndarray, k: int, rng: np.random.Generator,
                    iterations: int = 20) -> np.ndarray:
    """k clusters of (near) equal size: k-means, then Lloyd steps whose assignment step is
    `balanced_assignment` (centres move to their balanced clusters' means)."""
    k = min(k, len(x))
    labels = kmeans(x, k, rng, iterations)
    for _ in range(max(1, iterations // 4)):
        sums = np.zeros((k, x.shape[1]))
        np.add.at(sums, labels, x)
        sizes = np.bincount(labels, minlength=k)
        centres = np.where(sizes[:, None] > 0, sums / np.maximum(sizes, 1)[:, None],
                           x[rng.integers(len(x), size=k)])
        new_labels = balanced_assignment(x, centres)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    return labels  # the loop ran at least once, so these are balanced labels


def _split(x: np.ndarray, parts: int, rng: np.random.Generator,
           iterations: int, balanced: bool = False) -> tuple[list[np.ndarray], bool]:
    """Non-empty groups of row indices (by cluster label) and whether the fallback was used."""
    labels = (balanced_kmeans if balanced else kmeans)(x, parts, rng, iterations)
    groups = [g for g in (np.flatnonzero(labels == j) for j in range(parts)) if len(g)]
    if len(groups) >= 2:
        return groups, False
    return _even_split(x, parts), True


def _check_embeddings(embeddings: np.ndarray, num_docs: int) -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] != num_docs:
        raise DocidError(f"embeddings have shape {x.shape}; semantic docids need one row per "
                         f"document in corpus order, i.e. shape [{num_docs}, d]")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(1))[:5].tolist() if np.issubdtype(
            x.dtype, np.number) else []
        raise DocidError(f"embeddings must be finite numbers; rows {bad} are not")
    return x.astype(np.float64)


class SemanticDocids(DocidScheme):
    """Hierarchical k-means paths (module docstring); `stats` reports depth and leaf sizes."""

    name = "semantic"

    @classmethod
    def build(cls, collection_or_doc_ids: DocIds, *, embeddings: np.ndarray, num_clusters: int = 10,
              max_leaf_size: int | None = None, per_level_tokens: bool = False, seed: int = 0,
              kmeans_iterations: int = 20, normalize: bool = False, balanced: bool = False,
              base_vocab_size: int = T5_BASE_VOCAB_SIZE) -> "SemanticDocids":
        """`normalize` L2-normalises rows first (cluster by cosine, for cosine-trained encoders);
        `balanced` makes every split prefix-balanced (module docstring)."""
        doc_ids = resolve_doc_ids(collection_or_doc_ids)
        leaf = num_clusters if max_leaf_size is None else max_leaf_size
        if num_clusters < 2 or leaf < 1 or kmeans_iterations < 1:
            raise DocidError(f"need num_clusters >= 2, max_leaf_size >= 1 and kmeans_iterations >= 1, "
                             f"got {num_clusters}, {leaf} and {kmeans_iterations}")
        raw = np.asarray(embeddings)
        x = _check_embeddings(raw, len(doc_ids))
        if normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        paths, stats = _build_tree(x, num_clusters, leaf, seed, kmeans_iterations, balanced)
        alphabet = max(num_clusters, leaf)
        depth = max(len(p) for p in paths)
        if per_level_tokens:
            docids = [tuple(base_vocab_size + level * alphabet + v for level, v in enumerate(p))
                      for p in paths]
            num_new = depth * alphabet
        else:
            docids = [tuple(base_vocab_size + v for v in p) for p in paths]
            num_new = alphabet
        config = {"num_clusters": num_clusters, "max_leaf_size": leaf, "alphabet": alphabet,
                  "per_level_tokens": per_level_tokens, "seed": seed,
                  "kmeans_iterations": kmeans_iterations, "normalize": normalize,
                  "balanced": balanced,
                  "embedding_shape": list(raw.shape), "embeddings_sha256": hashlib.sha256(
                      np.ascontiguousarray(raw).tobytes()).hexdigest()}
        scheme = cls(doc_ids, docids, base_vocab_size=base_vocab_size, num_new_tokens=num_new,
                     config=config, stats=stats)
        log.info("%s", scheme.describe())
        return scheme

    def cluster_path(self, doc_id: str) -> tuple[int, ...]:
        """The docid as cluster indices (the last one is the position in the leaf)."""
        alphabet = int(self.config["alphabet"])
        return tuple((t - self.base_vocab_size) % alphabet for t in self.docid_tokens(doc_id))


def _build_tree(x: np.ndarray, num_clusters: int, max_leaf_size: int, seed: int,
                iterations: int, balanced: bool = False
                ) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    """Docid paths per row and tree statistics; iterative so deep trees cannot hit the recursion limit."""
    paths: list[tuple[int, ...]] = [()] * len(x)
    leaf_sizes: list[int] = []
    internal = fallbacks = 0
    stack: list[tuple[tuple[int, ...], np.ndarray]] = [((), np.arange(len(x)))]
    while stack:
        prefix, members = stack.pop()
        if len(members) <= max_leaf_size:
            for position, row in enumerate(np.sort(members).tolist()):
                paths[row] = prefix + (position,)
            leaf_sizes.append(len(members))
            continue
        rng = np.random.default_rng([seed, len(prefix), *prefix])
        groups, fell_back = _split(x[members], num_clusters, rng, iterations, balanced)
        internal += 1
        fallbacks += fell_back
        for index, group in enumerate(groups):
            stack.append((prefix + (index,), members[group]))
    depths = Counter(len(p) for p in paths)
    stats = {"max_depth": max(depths), "min_depth": min(depths),
             "mean_depth": round(sum(d * c for d, c in depths.items()) / len(paths), 3),
             "depth_histogram": {str(d): depths[d] for d in sorted(depths)},
             "num_leaves": len(leaf_sizes), "max_leaf_size": max(leaf_sizes),
             "mean_leaf_size": round(len(paths) / len(leaf_sizes), 3),
             "internal_nodes": internal, "fallback_splits": fallbacks}
    return paths, stats
