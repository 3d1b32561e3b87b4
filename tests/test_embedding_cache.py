"""The corpus-embedding cache: hits skip computation, mismatches and corruption recompute."""
import io
import logging
import subprocess
import sys

import numpy as np
import pytest

from irjax.files import temporary_prefix

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


def _damage_zero(path):
    path.write_bytes(b"")


def _damage_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _damage_crc(path):
    data = bytearray(path.read_bytes())
    data[data.find(b"\x93NUMPY") + 100] ^= 0xFF  # a byte inside the stored vectors
    path.write_bytes(bytes(data))


def _damage_not_zip(path):
    path.write_bytes(b"this is not a zip archive")


def _damage_keys(path):
    buffer = io.BytesIO()
    np.savez(buffer, something_else=np.zeros(3))
    path.write_bytes(buffer.getvalue())


def _damage_shape(path):
    with np.load(path) as data:
        digest = data["ids_sha256"]
    buffer = io.BytesIO()
    np.savez(buffer, vectors=np.zeros(3, np.float32), ids_sha256=digest)  # 1-D, right length
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("damage", [_damage_zero, _damage_truncate, _damage_crc, _damage_not_zip,
                                    _damage_keys, _damage_shape])
def test_damaged_cache_is_moved_aside_named_and_recomputed(tmp_path, caplog, damage):
    ids = ["a", "b", "c"]
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    cached_embeddings(tmp_path, "k", ids, lambda: vectors)
    damage(tmp_path / "k.npz")
    calls = []
    with caplog.at_level(logging.WARNING):
        again = cached_embeddings(tmp_path, "k", ids, lambda: calls.append(1) or vectors)
    assert calls == [1]
    np.testing.assert_array_equal(again, vectors)
    corrupt = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(corrupt) == 1 and corrupt[0].startswith("k.npz.corrupt-")
    assert f"{tmp_path / 'k.npz'} is damaged" in caplog.text and corrupt[0] in caplog.text
    # the rewritten cache is good: the next call is a hit
    np.testing.assert_array_equal(cached_embeddings(tmp_path, "k", ids, lambda: pytest.fail("miss")),
                                  vectors)


KILLED_WRITER = """
import os, sys, time
import numpy as np
from irjax.index import embedding_cache
def stuck(src, dst):  # the kill lands between writing the temporary file and renaming it
    print("written", flush=True)
    time.sleep(600)
os.replace = stuck
embedding_cache.cached_embeddings(sys.argv[1], "k", ["a"], lambda: np.ones((1, 2), np.float32))
"""


def test_orphan_of_a_writer_killed_mid_write_is_removed_but_a_live_writers_file_is_kept(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written"
    finally:
        writer.kill()
        writer.wait()
    orphans = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(orphans) == 1 and f"-{writer.pid}." in orphans[0].name
    live = tmp_path / f"{temporary_prefix('k.npz')}efgh5678.tmp"  # this (live) process's
    live.write_bytes(b"being written")
    cached_embeddings(tmp_path, "k", ["a"], lambda: np.ones((1, 2), np.float32))
    assert not orphans[0].exists()
    assert live.exists()
    assert (tmp_path / "k.npz").exists()
