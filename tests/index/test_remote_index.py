"""Indexes saved to and loaded from a remote directory (memory:// standing in for gs://): every
backend round-trips to the same results, faiss and ScaNN through a verified local copy that is
reused while the remote index is unchanged, and damage is reported naming the remote file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from irjax.files import atomic_write_text
from irjax.index import base
from irjax.index.base import IndexIntegrityError, create_index, load_index
from irjax.index.sharded import ShardedIndex
from irjax.paths import as_path

BACKENDS = [("exact", {}), ("faiss", {"structure": "ivf"}), ("scann", {"mode": "tree"})]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def corpus(n: int = 400, dim: int = 16) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n + 10, dim)).astype(np.float32)
    return x[:n], x[n:], [f"doc-{i}" for i in range(n)]


@pytest.mark.parametrize("kind,options", BACKENDS)
def test_every_backend_round_trips_through_a_remote_directory(kind, options, memory_bucket,
                                                              cache):
    vectors, queries, ids = corpus()
    index = create_index(kind, **options).build(vectors, ids)
    directory = f"{memory_bucket}/{kind}"
    index.save(directory)
    manifest = json.loads((as_path(directory) / base.MANIFEST_NAME).read_text())
    assert sorted(manifest["files"]) == sorted(
        str(p.relative_to(as_path(directory))) for p in _files(as_path(directory))
        if p.name != base.MANIFEST_NAME)
    loaded = load_index(directory)
    expected, found = index.search(queries, 5), loaded.search(queries, 5)
    np.testing.assert_array_equal(found.indices, expected.indices)
    np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-6)
    copies = list((cache / base.REMOTE_COPIES).iterdir())
    assert len(copies) == 1 and (copies[0] / base.MANIFEST_NAME).is_file()
    load_index(directory)  # unchanged remote index: the same local copy, nothing new
    assert list((cache / base.REMOTE_COPIES).iterdir()) == copies


def _files(folder):
    for entry in folder.iterdir():
        yield from (_files(entry) if entry.is_dir() else [entry])


def test_damaged_or_incomplete_remote_indexes_are_refused_naming_the_remote_file(memory_bucket):
    vectors, _, ids = corpus(50)
    directory = as_path(f"{memory_bucket}/exact")
    create_index("exact").build(vectors, ids).save(directory)
    data = bytearray((directory / "vectors.npy").read_bytes())
    data[-1] ^= 0xFF
    (directory / "vectors.npy").write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match=rf"{directory}/vectors.npy fails its sha256"):
        load_index(directory)
    (directory / "vectors.npy").unlink()
    with pytest.raises(IndexIntegrityError, match=rf"{directory}/vectors.npy is missing"):
        load_index(directory)
    (directory / base.MANIFEST_NAME).unlink()
    with pytest.raises(IndexIntegrityError, match=rf"{directory} has no manifest.json"):
        load_index(directory)


def test_a_sharded_index_round_trips_through_a_remote_directory(memory_bucket):
    vectors, queries, ids = corpus(90)
    index = ShardedIndex("exact")
    for part, rows in enumerate((range(0, 40), range(40, 90))):
        index.add(part, rows, vectors[rows.start:rows.stop], ids[rows.start:rows.stop])
    directory = f"{memory_bucket}/sharded"
    index.save(directory)
    assert sorted(p.name for p in as_path(directory).iterdir()) == [
        "part-00000", "part-00001", "shards.json"]
    loaded = ShardedIndex.load(directory)
    for got, want in zip(loaded.search(queries, 7), index.search(queries, 7)):
        np.testing.assert_array_equal(got, want)
    atomic_write_text(as_path(directory) / "shards.json", "{")
    with pytest.raises(IndexIntegrityError, match="shards.json is missing or unreadable"):
        ShardedIndex.load(directory)
