"""TAS-Balanced: seeded k-means, one cluster per batch, uniform use of teacher-margin bins."""
import numpy as np
import pytest

from irjax.data.tas_sampler import (
    TASBalancedSampler,
    balanced_choice,
    cluster_queries,
    kmeans,
    margin_bins,
)


def blobs(seed: int = 0, per_blob: int = 30, k: int = 4, dim: int = 8):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 20
    labels = np.repeat(np.arange(k), per_blob)
    return centers[labels] + rng.normal(size=(len(labels), dim)), labels


def test_kmeans_recovers_separated_blobs_and_is_deterministic_by_seed():
    points, labels = blobs()
    first = kmeans(points, 4, seed=3, iterations=5)
    assert first.centroids.shape == (4, 8)
    # Same partition as the blobs, up to renaming: each found cluster is exactly one blob.
    for cluster in range(4):
        assert len(set(labels[first.assignments == cluster])) == 1
    again = kmeans(points, 4, seed=3, iterations=5)
    np.testing.assert_array_equal(first.assignments, again.assignments)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    assert first.inertia == again.inertia


def test_kmeans_seed_changes_initialisation_on_unstructured_data():
    points = np.random.default_rng(1).normal(size=(200, 4))
    results = {tuple(kmeans(points, 8, seed=s, iterations=1).assignments[:50]) for s in range(4)}
    assert len(results) > 1


def test_kmeans_keeps_k_clusters_with_duplicate_points_and_rejects_bad_input():
    points = np.array([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 5 + [[5.0, 5.0]])
    result = kmeans(points, 3, seed=0)
    assert len(set(result.assignments.tolist())) == 3
    with pytest.raises(ValueError, match=r"k must be in \[1, 11\]"):
        kmeans(points, 12, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.array([[np.nan, 0.0]]), 1, seed=0)


def test_cluster_queries_merges_small_clusters_into_the_nearest():
    points, labels = blobs(per_blob=10, k=3)
    points = np.concatenate([points, points[:2] + 0.01])  # 2 extra near blob 0
    ids = [f"q{i}" for i in range(len(points))]
    clusters = cluster_queries(ids, points, num_clusters=4, seed=0, min_cluster_size=8)
    sizes = np.bincount(list(clusters.values()))
    assert len(sizes) == 3  # k-means split a blob in two (sizes 5 and 7): merged back
    assert sizes.min() >= 8 and sorted(set(clusters.values())) == list(range(len(sizes)))
    assert clusters["q30"] == clusters["q0"]  # the near-duplicates joined their blob
    with pytest.raises(ValueError, match="got 32 query ids but 31 embeddings"):
        cluster_queries(ids, points[:-1], 2, seed=0)


def test_sampler_batches_are_one_cluster_distinct_queries_and_seeded():
    query_clusters = np.repeat(np.arange(3), [12, 20, 9])
    pair_queries = np.concatenate([np.arange(41), np.arange(0, 41, 3)])  # some queries: 2 pairs
    sampler = TASBalancedSampler(pair_queries, query_clusters, batch_size=8, seed=5)
    seen_clusters = set()
    for step in range(30):
        pairs = sampler.batch(epoch=0, step=step)
        queries = pair_queries[pairs]
        assert len(set(queries.tolist())) == 8
        assert len(set(query_clusters[queries].tolist())) == 1
        assert query_clusters[queries[0]] == sampler.cluster_of_batch(0, step)
        seen_clusters.add(int(query_clusters[queries[0]]))
    assert seen_clusters == {0, 1, 2}
    np.testing.assert_array_equal(sampler.batch(2, 7), TASBalancedSampler(
        pair_queries, query_clusters, 8, seed=5).batch(2, 7))
    assert not np.array_equal(sampler.batch(1, 7), sampler.batch(2, 7))
    with pytest.raises(ValueError, match=r"cluster, size\) \[\(2, 9\)\]"):
        TASBalancedSampler(pair_queries, query_clusters, batch_size=10, seed=0)


def test_margin_bins_are_equal_width_over_the_range():
    np.testing.assert_array_equal(margin_bins(np.array([0.0, 0.49, 0.5, 0.99, 1.0]), 2),
                                  [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(margin_bins(np.array([3.0, 3.0]), 4), [0, 0])


def test_balanced_choice_uses_margin_bins_uniformly_on_skewed_margins():
    rng = np.random.default_rng(0)
    # 90% of candidates have near-zero margins: uniform sampling would nearly always pick bin 0.
    margins = np.concatenate([rng.uniform(0, 0.1, 900)] + [rng.uniform(b, b + 0.1, 25)
                                                          for b in np.arange(0.1, 1.0, 0.1)])
    bins = margin_bins(margins, 10)
    assert np.bincount(bins)[0] > 800
    counts = np.zeros(10)
    for _ in range(2000):
        chosen = balanced_choice(rng, margins, 1, num_bins=10)
        counts[bins[chosen]] += 1
    assert counts.min() > 150 and counts.max() < 250  # 200 expected in each bin
    picks = balanced_choice(np.random.default_rng(1), margins, 30, 10)
    assert len(set(picks.tolist())) == 30  # distinct negatives
    with pytest.raises(ValueError, match="cannot choose 5 distinct negatives from 3"):
        balanced_choice(rng, margins[:3], 5, 10)
