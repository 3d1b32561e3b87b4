"""Embedding shards in a remote directory (memory:// standing in for gs://): written with their
markers, read back identical, resumed after a lost marker, damaged shards moved aside and
encoded again, and a shard whose bytes fail the marker's checksum refused."""
from __future__ import annotations

import numpy as np
import pytest

from irjax.data.collection import Document
from irjax.paths import as_path
from irjax.retrieval.corpus_encoding import EmbeddingShards, EmbeddingShardsError, encode_shards

VECTORS = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)


def encode_all(shards: EmbeddingShards) -> tuple[dict, list[str]]:
    """Encodes every missing shard with a fake encoder: row i -> VECTORS[i]; returns the stats
    and the texts it was asked to encode."""
    seen: list[str] = []

    def documents(rows: range) -> list[Document]:
        return [Document(str(i), "", str(i)) for i in rows]

    def encode(texts: list[str], done) -> np.ndarray:
        seen.extend(texts)
        return VECTORS[[int(t) for t in texts]]

    return encode_shards(shards, documents, encode, range(shards.layout.num_shards)), seen


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_remote_shards_round_trip_and_resume(memory_bucket, dtype):
    directory = f"{memory_bucket}/emb"
    settings = dict(model="m", corpus="c", count=10, dim=6, dtype=dtype, shard_size=4)
    shards = EmbeddingShards.create(directory, **settings)
    stats, _ = encode_all(shards)
    assert stats["encoded_docs"] == 10 and shards.missing() == []
    reopened = EmbeddingShards.open(directory)
    np.testing.assert_allclose(reopened.matrix(), VECTORS, atol=0.02 if dtype == "int8" else 0)
    first = {p.name: p.read_bytes() for p in as_path(directory).iterdir() if p.suffix == ".npy"}

    folder = as_path(directory)
    (folder / "shard-00001.done").unlink()  # killed between a shard's files and its marker
    (folder / "shard-00002.npy").write_bytes(b"truncated")  # or in the middle of its upload
    stats, texts = encode_all(EmbeddingShards.create(directory, **settings))
    assert (stats["encoded_docs"], stats["skipped_shards"]) == (6, 1)
    assert texts == [str(i) for i in range(4, 10)]
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".npy"} == first
    moved = sorted(p.name.split(".corrupt-")[0] for p in folder.iterdir() if ".corrupt-" in p.name)
    assert moved == ["shard-00002.done", "shard-00002.npy"] + (
        ["shard-00002.scales.npy"] if dtype == "int8" else [])
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_remote_shard_failing_its_checksum_is_refused(memory_bucket):
    directory = f"{memory_bucket}/emb"
    shards = EmbeddingShards.create(directory, model="m", corpus="c", count=10, dim=6,
                                    dtype="float32", shard_size=4)
    encode_all(shards)
    path = as_path(directory) / "shard-00000.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert shards.is_complete(0) and not shards.is_complete(0, verify=True)
    with pytest.raises(EmbeddingShardsError, match=rf"{directory}: shard 0 is missing, "
                                                   "incomplete or fails its checksum"):
        shards.load(0)
    assert shards.load(0, verify=False)[-1, -1] != VECTORS[3, -1]  # sizes only: loads the bytes
    with pytest.raises(EmbeddingShardsError, match="holds another encoding.*shard_size"):
        EmbeddingShards.create(directory, model="m", corpus="c", count=10, dim=6,
                               dtype="float32", shard_size=5)
    with pytest.raises(EmbeddingShardsError, match=rf"{memory_bucket}/none has no manifest.json"):
        EmbeddingShards.open(f"{memory_bucket}/none")
