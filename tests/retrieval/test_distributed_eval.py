"""The distributed-evaluation contract: `launch/local_multiprocess.py` with 2 processes writes the
same run.trec and metrics.json as one process, for MiniLM (each process encodes only its own
shards) and for BM25 (each process searches its share of the queries)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


from tests.helpers.corpus import write_corpus

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "launch" / "local_multiprocess.py"


def evaluate(tmp_path, name, config, data, processes=None, extra=()):
    workdir = tmp_path / name
    command = [sys.executable, "-m", "irjax.main", f"--gin_file={config}",
               f"--gin.DATA_DIR='{data}'", "--gin.SPLIT='test'", f"--gin.WORKDIR='{workdir}'",
               *extra]
    if processes:
        command = [sys.executable, str(LAUNCHER), "--num_processes", str(processes[0]),
                   "--devices_per_process", str(processes[1]), "--", *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IRJAX_CACHE_DIR": str(tmp_path / f"cache-{name}")}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


def assert_same_results(one: Path, other: Path) -> None:
    assert (one / "run.trec").read_bytes() == (other / "run.trec").read_bytes()
    first, second = (json.loads((p / "metrics.json").read_text()) for p in (one, other))
    assert first["metrics"] == second["metrics"]
    assert (first["num_queries"], first["num_documents"]) == (4, 30)


def test_two_processes_write_what_one_process_writes(tmp_path):
    data = write_corpus(tmp_path / "data", 30)
    dense = ["--gin.INDEX='exact'", "--gin.pretrained_encoder.max_length=32"]
    one = evaluate(tmp_path, "dense-1", "gin/eval/minilm.gin", data, extra=dense)
    two = evaluate(tmp_path, "dense-2x2", "gin/eval/minilm.gin", data, (2, 2), dense)
    assert_same_results(one, two)
    timings = json.loads((two / "metrics.json").read_text())["timings"]
    assert timings["processes"] == 2
    # The default shard size (65,536) exceeds the corpus: it is cut into 8 shards whatever the
    # process count (so the cache, and the index parts, are the same); each process encoded
    # (and searched) its 4, none twice, into the same bytes as one process.
    markers = sorted((tmp_path / "cache-dense-2x2").rglob("shard-*.done"))
    assert len(markers) == 8
    one_shards = sorted((tmp_path / "cache-dense-1").rglob("shard-*.npy"))
    two_shards = sorted((tmp_path / "cache-dense-2x2").rglob("shard-*.npy"))
    assert [len(np.load(p)) for p in two_shards] == [4] * 7 + [2]
    assert [p.relative_to(tmp_path / "cache-dense-1") for p in one_shards] == \
        [p.relative_to(tmp_path / "cache-dense-2x2") for p in two_shards]
    assert [p.read_bytes() for p in one_shards] == [p.read_bytes() for p in two_shards]

    bm25_one = evaluate(tmp_path, "bm25-1", "gin/eval/bm25.gin", data)
    bm25_two = evaluate(tmp_path, "bm25-2", "gin/eval/bm25.gin", data, (2, 1))
    assert_same_results(bm25_one, bm25_two)


def test_more_shards_than_one_per_process_split_evenly(tmp_path):
    data = write_corpus(tmp_path / "data", 30)
    dense = ["--gin.INDEX='exact'", "--gin.DenseRetriever.shard_size=3",
             "--gin.pretrained_encoder.max_length=32"]
    one = evaluate(tmp_path, "dense-1", "gin/eval/minilm.gin", data, extra=dense)
    two = evaluate(tmp_path, "dense-2x2", "gin/eval/minilm.gin", data, (2, 2), dense)
    assert_same_results(one, two)
    # a shard size below the small-corpus one is kept: 10 shards of 3, five encoded by each
    assert len(sorted((tmp_path / "cache-dense-2x2").rglob("shard-*.done"))) == 10
    one_shards = sorted((tmp_path / "cache-dense-1").rglob("shard-*.npy"))
    two_shards = sorted((tmp_path / "cache-dense-2x2").rglob("shard-*.npy"))
    assert [p.read_bytes() for p in one_shards] == [p.read_bytes() for p in two_shards]
