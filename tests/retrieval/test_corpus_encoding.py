"""Embedding shards: what they hold equals the encoder's own output, a resumed encoding writes
byte-identical shards, damaged shards are encoded again, other settings are refused."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from irjax.data.collection import load_collection
from irjax.models.dual_encoder import TextEncoder
from irjax.retrieval.corpus_encoding import EmbeddingShards, EmbeddingShardsError
from irjax.retrieval.distributed import encode_corpus_shards
from irjax.retrieval.mesh_encoding import mesh_text_encoder
from tests.helpers.corpus import write_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder.from_pretrained(max_length=32)


def encode(collection, encoder, directory, **settings):
    return encode_corpus_shards(collection, mesh_text_encoder(encoder, 4), directory,
                                model=encoder.fingerprint, dim=encoder.dim,
                                **{"shard_size": 4, **settings})


def test_shards_hold_the_encoders_vectors_and_resume_byte_identical(tmp_path, encoder):
    collection = load_collection(write_corpus(tmp_path / "c", 10), "test")
    shards, stats = encode(collection, encoder, tmp_path / "emb")
    assert (shards.layout.num_shards, stats["encoded_docs"]) == (3, 10)
    expected = encoder.encode([d.contents for d in collection.documents])
    np.testing.assert_allclose(shards.matrix(), expected, atol=1e-6)
    files = {p.name: p.read_bytes() for p in (tmp_path / "emb").glob("shard-*.npy")}

    # A kill between a shard's files and its marker, or in its temporary write: both redone.
    (tmp_path / "emb" / "shard-00001.done").unlink()
    (tmp_path / "emb" / "shard-00002.npy").write_bytes(b"truncated")
    again, stats = encode(collection, encoder, tmp_path / "emb")
    assert (stats["encoded_docs"], stats["skipped_shards"]) == (6, 1)
    assert {p.name: p.read_bytes() for p in (tmp_path / "emb").glob("shard-*.npy")} == files
    moved = sorted(p.name for p in (tmp_path / "emb").glob("*.corrupt-*"))
    assert [m.split(".corrupt-")[0] for m in moved] == ["shard-00002.done", "shard-00002.npy"]


def test_reduced_precision_shards_decode_close_to_float32(tmp_path, encoder):
    collection = load_collection(write_corpus(tmp_path / "c", 6), "test")
    full = encode(collection, encoder, tmp_path / "f32")[0].matrix()
    for dtype, cosine in (("float16", 0.99999), ("int8", 0.999)):
        shards = encode(collection, encoder, tmp_path / dtype, dtype=dtype)[0]
        decoded = shards.matrix()
        sims = np.sum(decoded * full, 1) / np.linalg.norm(decoded, axis=1)
        assert sims.min() > cosine, (dtype, sims.min())
        assert shards.bytes_per_document() < 4 * encoder.dim


def test_other_settings_and_damage_are_refused(tmp_path, encoder):
    collection = load_collection(write_corpus(tmp_path / "c", 5), "test")
    shards = encode(collection, encoder, tmp_path / "emb")[0]
    with pytest.raises(EmbeddingShardsError, match="holds another encoding.*shard_size"):
        encode(collection, encoder, tmp_path / "emb", shard_size=2)
    path = tmp_path / "emb" / "shard-00000.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EmbeddingShardsError, match="shard 0 is missing, incomplete or fails"):
        shards.load(0)
    with pytest.raises(EmbeddingShardsError, match="no manifest.json"):
        EmbeddingShards.open(tmp_path / "nothing")


def test_kill_9_then_the_same_command_gives_identical_shards(tmp_path):
    data = write_corpus(tmp_path / "c", 48)
    command = [sys.executable, "-m", "irjax.main", "--gin_file=gin/encode/minilm.gin",
               f"--gin.DATA_DIR='{data}'", "--gin.SPLIT='test'",
               "--gin.encode_corpus.shard_size=4", "--gin.pretrained_encoder.max_length=32"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IRJAX_CACHE_DIR": str(tmp_path / "cache")}

    def run(out, kill_after=None):
        args = command + [f"--gin.WORKDIR='{out}'"]
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if kill_after is None:
            assert proc.wait(timeout=600) == 0
            return
        deadline = time.time() + 600
        while len(list((out / "embeddings").glob("*.done"))) < kill_after:
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    run(tmp_path / "whole")
    run(tmp_path / "killed", kill_after=3)
    done = len(list((tmp_path / "killed" / "embeddings").glob("*.done")))
    assert 3 <= done < 12, done
    run(tmp_path / "killed")
    summary = json.loads((tmp_path / "killed" / "encode_summary.json").read_text())
    assert summary["skipped_shards"] >= 3
    shards = sorted(p.name for p in (tmp_path / "whole" / "embeddings").glob("shard-*.npy"))
    assert len(shards) == 12
    for name in shards:
        assert (tmp_path / "killed" / "embeddings" / name).read_bytes() == \
            (tmp_path / "whole" / "embeddings" / name).read_bytes()
