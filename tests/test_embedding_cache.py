"""The corpus-embedding cache: hits skip computation, mismatches and corruption recompute."""
import numpy as np

from irjax.index.embedding_cache import cache_key, cached_embeddings


def test_hit_skips_compute_and_returns_same_vectors(tmp_path):
    calls = []
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    compute = lambda: calls.append(1) or vectors  # noqa: E731
    key = cache_key(model="m", corpus="c")
    first = cached_embeddings(tmp_path, key, ["a", "b", "c"], compute)
    second = cached_embeddings(tmp_path, key, ["a", "b", "c"], compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    assert list(tmp_path.iterdir()) == [tmp_path / f"{key}.npz"]  # no temporary files left


def test_key_depends_on_every_part():
    assert cache_key(model="m", corpus="c") != cache_key(model="m2", corpus="c")
    assert cache_key(model="m", corpus="c") != cache_key(model="m", corpus="c2")


def test_mismatched_ids_or_corrupt_file_recompute(tmp_path):
    key = "k"
    cached_embeddings(tmp_path, key, ["a", "b"], lambda: np.zeros((2, 2), np.float32))
    ones = cached_embeddings(tmp_path, key, ["a", "x"], lambda: np.ones((2, 2), np.float32))
    assert ones.sum() == 4
    (tmp_path / "k.npz").write_bytes(b"garbage")
    twos = cached_embeddings(tmp_path, key, ["a", "x"], lambda: np.full((2, 2), 2, np.float32))
    assert twos.sum() == 8
