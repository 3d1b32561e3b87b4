"""The pipeline with DATA_DIR, WORKDIR, the embeddings and the index on a remote filesystem
(memory:// standing in for gs://; in-process, since it lives in this process only) writes what
the same configs write with local paths: BM25 and MiniLM evaluation, and encode_corpus shards
that DenseRetriever(embeddings=...) reads back."""
from __future__ import annotations

import json

import gin
import pytest

from irjax import gin_config
from irjax.index.sharded import ShardedIndex
from irjax.paths import as_path
from irjax.workdir import read_status
from irjax.workdir_lock import remote_lock_path
from tests.helpers.corpus import write_corpus
from tests.helpers.memory_fs import upload

pytestmark = pytest.mark.usefixtures("clean_gin")
MINILM = ["INDEX='exact'", "pretrained_encoder.max_length=32", "DenseRetriever.shard_size=8"]


@pytest.fixture
def data(tmp_path, memory_bucket, monkeypatch):
    """(local collection, the same uploaded) with a fresh cache for both runs."""
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    local = write_corpus(tmp_path / "data", 20)
    return local, upload(local, f"{memory_bucket}/data")


def run(config: str, data, workdir, *bindings: str) -> None:
    gin.clear_config()
    gin_config.parse([config], [f"DATA_DIR='{data}'", "SPLIT='test'", f"WORKDIR='{workdir}'",
                                *bindings])
    gin_config.run_job()


def results(workdir) -> dict:
    folder = as_path(workdir)
    record = json.loads((folder / "metrics.json").read_text())
    return {"metrics": record["metrics"], "documents": record["num_documents"],
            "run": (folder / "run.trec").read_text(),
            "per_query": (folder / "per_query.jsonl").read_text()}


def test_bm25_with_remote_data_and_workdir_writes_what_local_paths_write(tmp_path, data,
                                                                         memory_bucket):
    local, remote = data
    run("gin/eval/bm25.gin", local, tmp_path / "w")
    run("gin/eval/bm25.gin", remote, f"{memory_bucket}/w")
    expected = results(tmp_path / "w")
    assert results(f"{memory_bucket}/w") == expected and expected["documents"] == 20
    assert expected["metrics"]["nDCG@10"] > 0.5
    workdir = as_path(f"{memory_bucket}/w")
    assert sorted(p.name for p in workdir.iterdir()) == sorted(
        p.name for p in (tmp_path / "w").iterdir() if p.name != ".lock")
    assert read_status(workdir)["state"] == "done"
    assert remote_lock_path(workdir).is_file()  # the lock is local; nothing of it on the store

    run("gin/eval/bm25.gin", remote, workdir, "BM25Retriever.k1 = 1.2")  # a second run
    assert "k1 = 1.2" in (workdir / "config.gin").read_text()
    assert not (workdir / "previous_results").exists() and read_status(workdir)["state"] == "done"


def test_minilm_encode_index_evaluate_on_remote_paths_equals_local(tmp_path, data,
                                                                   memory_bucket):
    local, remote = data
    run("gin/eval/minilm.gin", local, tmp_path / "w", *MINILM)
    local_cache = sorted((tmp_path / "cache" / "embeddings").iterdir())  # the local run's

    run("gin/encode/minilm.gin", remote, f"{memory_bucket}/encode",
        "pretrained_encoder.max_length=32", "encode_corpus.shard_size=8")
    embeddings = as_path(f"{memory_bucket}/encode/embeddings")
    assert sorted(p.name for p in embeddings.iterdir()) == ["manifest.json"] + [
        f"shard-0000{s}.{ext}" for s in range(3) for ext in ("done", "npy")]
    summary = json.loads((as_path(f"{memory_bucket}/encode") / "encode_summary.json").read_text())
    assert (summary["documents"], summary["shards"], summary["output"]) == (20, 3, str(embeddings))

    index = f"{memory_bucket}/index"
    run("gin/eval/minilm.gin", remote, f"{memory_bucket}/w", *MINILM,
        f"DenseRetriever.embeddings='{embeddings}'", f"DenseRetriever.save_index_to='{index}'",
        "evaluate_retriever.streamed=True")
    assert results(f"{memory_bucket}/w") == results(tmp_path / "w")
    saved = ShardedIndex.load(index)
    assert len(saved) == 20 and sorted(saved.parts) == [0, 1, 2]  # one part per embedding shard
    assert sorted((tmp_path / "cache" / "embeddings").iterdir()) == local_cache  # not encoded
