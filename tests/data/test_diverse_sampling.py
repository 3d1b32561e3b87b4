"""DUQGen's diversity controls: few-shot examples from distinct clusters, documents dealt over
clusters, k-means recovering well-separated blobs."""
import numpy as np
import pytest

from irjax.data.diverse_sampling import cluster_documents, pick_examples, spread_documents

DOCS = [f"d{i}" for i in range(10)]
CLUSTERS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])  # sizes 4, 3, 2, 1


def test_examples_come_from_distinct_clusters_largest_first():
    labelled = {d: [f"query about {d}"] for d in DOCS}
    for seed in range(5):
        picked = pick_examples(DOCS, CLUSTERS, labelled, 3, seed)
        clusters = [int(CLUSTERS[DOCS.index(d)]) for d, _ in picked]
        assert clusters == [0, 1, 2]
        assert all(q == f"query about {d}" for d, q in picked)


def test_clusters_without_labelled_documents_are_skipped_and_too_few_is_an_error():
    labelled = {"d0": ["a"], "d9": ["b", "c"]}  # only clusters 0 and 3 have labels
    picked = pick_examples(DOCS, CLUSTERS, labelled, 2, 0)
    assert [d for d, _ in picked] == ["d0", "d9"]
    with pytest.raises(ValueError, match="only 2 clusters hold a labelled document"):
        pick_examples(DOCS, CLUSTERS, labelled, 3, 0)


def test_min_words_keeps_only_sentence_like_queries_as_examples():
    labelled = {d: ["fat", f"does {d} lower blood pressure"] for d in DOCS}
    labelled["d9"] = ["limes"]  # cluster 3's only labelled document has a one-word query alone
    for seed in range(5):
        picked = pick_examples(DOCS, CLUSTERS, labelled, 3, seed, min_words=4)
        assert [q for _, q in picked] == [f"does {d} lower blood pressure" for d, _ in picked]
    unfiltered = [q for seed in range(5) for _, q in pick_examples(DOCS, CLUSTERS, labelled, 3, seed)]
    assert "fat" in unfiltered  # without the floor, one-word queries are drawn too
    with pytest.raises(ValueError, match="only 3 clusters .* >= 4 words"):
        pick_examples(DOCS, CLUSTERS, labelled, 4, 0, min_words=4)
    assert [d for d, _ in pick_examples(DOCS, CLUSTERS, labelled, 4, 0)][-1] == "d9"


def test_documents_are_dealt_round_robin_over_clusters():
    spread = spread_documents(DOCS, CLUSTERS, 6, 0, exclude=["d0"])
    clusters = [int(CLUSTERS[DOCS.index(d)]) for d in spread]
    assert clusters == [0, 1, 2, 3, 0, 1]  # one per cluster, then the next round
    assert "d0" not in spread and len(set(spread)) == 6
    everything = spread_documents(DOCS, CLUSTERS, None, 0)
    assert sorted(everything) == sorted(DOCS)
    assert spread_documents(DOCS, CLUSTERS, 6, 0, exclude=["d0"]) == spread  # seeded


def test_kmeans_finds_separated_blobs():
    rng = np.random.default_rng(0)
    centers = np.eye(4) * 10
    points = np.concatenate([c + rng.normal(size=(5, 4)) * 0.1 for c in centers])
    labels = cluster_documents(points, 4, seed=0)
    for blob in range(4):
        assert len(set(labels[blob * 5:(blob + 1) * 5].tolist())) == 1
    assert len(set(labels.tolist())) == 4
