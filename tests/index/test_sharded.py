"""Sharded indexes: per-shard top-k merged into the global top-k equals one index over
everything (exact search, ties included), and shards round-trip through their manifests."""
import json

import numpy as np
import pytest

from irjax.index.base import IndexIntegrityError, create_index
from irjax.index.sharded import ShardedIndex, merge_top_k


def corpus(n=203, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors[50] = vectors[7]      # exact ties across shards: the lower row must win
    vectors[min(120, n - 1)] = vectors[7]
    return vectors, [f"doc{i}" for i in range(n)]


def sharded(vectors, ids, size, kind="exact", **options):
    index = ShardedIndex(kind, **options)
    for part, start in enumerate(range(0, len(ids), size)):
        rows = range(start, min(start + size, len(ids)))
        index.add(part, rows, vectors[rows.start:rows.stop], ids[rows.start:rows.stop])
    return index


@pytest.mark.parametrize("shard_size", [1, 37, 64, 203])
def test_sharded_exact_search_equals_one_exact_index(shard_size):
    vectors, ids = corpus()
    queries = np.concatenate([vectors[[7, 3]], np.random.default_rng(1).normal(
        size=(5, 16)).astype(np.float32)])
    whole = create_index("exact").build(vectors, ids).search(queries, 10)
    scores, rows = sharded(vectors, ids, shard_size).search(queries, 10)
    np.testing.assert_array_equal(rows, whole.indices)
    np.testing.assert_array_equal(scores, whole.scores)
    assert rows[0][:3].tolist() == [7, 50, 120]  # the three copies, lowest row first


def test_merge_pads_short_results_and_breaks_ties_by_row():
    a = (np.array([[0.9, 0.5]], np.float32), np.array([[4, 9]]))
    b = (np.array([[0.9]], np.float32), np.array([[2]]))
    scores, rows = merge_top_k([a, b], 4)
    assert rows.tolist() == [[2, 4, 9, -1]]
    assert scores[0, :3].tolist() == pytest.approx([0.9, 0.9, 0.5]) and np.isneginf(scores[0, 3])
    empty = (np.array([[-np.inf]], np.float32), np.array([[-1]]))
    assert merge_top_k([empty, b], 1)[1].tolist() == [[2]]


def test_shards_save_and_load_with_their_manifests(tmp_path):
    vectors, ids = corpus(n=90, seed=5)
    index = sharded(vectors, ids, 40)
    index.save(tmp_path / "idx")
    listing = json.loads((tmp_path / "idx" / "shards.json").read_text())
    assert listing["parts"] == {"0": {"rows": [[0, 40]], "count": 40},
                                "1": {"rows": [[40, 80]], "count": 40},
                                "2": {"rows": [[80, 90]], "count": 10}}
    loaded = ShardedIndex.load(tmp_path / "idx")
    queries = vectors[:4]
    for got, want in zip(loaded.search(queries, 5), index.search(queries, 5)):
        np.testing.assert_array_equal(got, want)
    only = ShardedIndex.load(tmp_path / "idx", parts=[1])
    assert len(only) == 40 and only.search(vectors[45:46], 1)[1].tolist() == [[45]]
    (tmp_path / "idx" / "part-00001" / "vectors.npy").write_bytes(b"broken")
    with pytest.raises(IndexIntegrityError):
        ShardedIndex.load(tmp_path / "idx")


def test_sharded_scann_finds_what_exact_search_finds():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(3000, 32)).astype(np.float32)
    ids = [f"d{i}" for i in range(3000)]
    queries = vectors[rng.choice(3000, 20, replace=False)] + 0.01
    exact = sharded(vectors, ids, 1000).search(queries, 10)[1]
    approx = sharded(vectors, ids, 1000, kind="scann").search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9


def test_a_part_may_hold_scattered_rows():
    """A process owns every P-th embedding shard: its part's rows are not one range."""
    vectors, ids = corpus(n=60, seed=2)
    rows = np.r_[0:10, 20:30, 40:50]
    other = np.setdiff1d(np.arange(60), rows)
    index = ShardedIndex("exact")
    index.add(0, rows, vectors[rows], [ids[r] for r in rows])
    index.add(1, other, vectors[other], [ids[r] for r in other])
    whole = create_index("exact").build(vectors, ids).search(vectors[:5], 7)
    np.testing.assert_array_equal(index.search(vectors[:5], 7)[1], whole.indices)
    with pytest.raises(ValueError, match="increasing corpus row"):
        index.add(2, rows[::-1], vectors[rows], [ids[r] for r in rows])


def test_unknown_kind_fails_before_any_vector():
    with pytest.raises(ValueError, match="unknown index kind 'nonsense'"):
        ShardedIndex("nonsense")


def test_a_process_without_rows_contributes_empty_slots():
    """With more processes than shards some process owns no rows: its empty lists must merge
    away, leaving exactly the other process's results."""
    vectors, ids = corpus()
    queries = vectors[[3, 9]]
    owner = sharded(vectors, ids, 64)
    scores, rows = ShardedIndex("exact").search(queries, 5)
    assert scores.shape == rows.shape == (2, 5)
    assert np.all(np.isneginf(scores)) and np.all(rows == -1)
    merged = merge_top_k([owner.search(queries, 5), (scores, rows)], 5)
    np.testing.assert_array_equal(merged[1], owner.search(queries, 5)[1])
    np.testing.assert_array_equal(merged[0], owner.search(queries, 5)[0])


def test_approximate_parts_give_the_same_results_however_processes_split_them():
    """One ScaNN (asymmetric hashing) part per embedding shard: the parts do not depend on how
    many processes hold them, so neither do the merged results."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(4 * 1500, 16)).astype(np.float32)
    ids = [f"doc{i}" for i in range(len(vectors))]
    queries = rng.normal(size=(20, 16)).astype(np.float32)

    def process(parts):
        index = ShardedIndex("scann")
        for part in parts:
            rows = range(part * 1500, (part + 1) * 1500)
            index.add(part, rows, vectors[rows.start:rows.stop], ids[rows.start:rows.stop])
        return index.search(queries, 10)

    one = process([0, 1, 2, 3])
    two = merge_top_k([process([0, 2]), process([1, 3])], 10)
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[0], two[0])
