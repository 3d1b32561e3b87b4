"""The entry point: gin flag rewriting, early validation, and a whole BM25 run on a tiny collection."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irjax import gin_config

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("clean_gin")


def write_tiny_collection(root: Path) -> Path:
    """Three documents, two judged queries: enough for BM25 to rank something."""
    path = root / "tiny"
    (path / "qrels").mkdir(parents=True)
    docs = [
        {"_id": "d1", "title": "Jaguar", "text": "The jaguar is a large cat native to the Americas."},
        {"_id": "d2", "title": "Python", "text": "Python is a programming language with dynamic typing."},
        {"_id": "d3", "title": "Coffee", "text": "Coffee is brewed from roasted coffee beans."},
    ]
    queries = [{"_id": "q1", "text": "big cat in america"}, {"_id": "q2", "text": "roasted beans drink"}]
    (path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    return path


def test_rewrite_gin_args():
    argv = ["prog", "--gin_file=a.gin", "--gin.WORKDIR='/tmp/x'", "--gin.evaluate_retriever.top_k=5"]
    assert gin_config.rewrite_gin_args(argv) == [
        "prog", "--gin_file=a.gin", "--gin_bindings=WORKDIR='/tmp/x'", "--gin_bindings=evaluate_retriever.top_k=5",
    ]


def test_unbound_macro_fails_before_any_work():
    with pytest.raises(gin_config.GinConfigError, match="WORKDIR"):
        gin_config.parse(["gin/eval/bm25.gin"], [])


def test_missing_gin_file_names_it():
    with pytest.raises(gin_config.GinConfigError, match="nope.gin"):
        gin_config.parse(["gin/eval/nope.gin"], ["WORKDIR='x'"])


def test_config_without_job_is_rejected():
    with pytest.raises(gin_config.GinConfigError, match="no job"):
        gin_config.parse([], ["WORKDIR='x'"])


def test_bm25_run_writes_metrics_run_and_config(tmp_path):
    data = write_tiny_collection(tmp_path)
    workdir = tmp_path / "work"
    gin_config.parse(["gin/eval/bm25.gin"], [f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'"])
    record = gin_config.run_job()
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(record))
    assert set(metrics["metrics"]) == {"nDCG@10", "R@10", "R@100", "RR@10"}
    assert (metrics["dataset"], metrics["split"], metrics["model"]) == ("tiny", "test", "bm25")
    # Each query's relevant document shares its only content words: BM25 ranks it first.
    assert metrics["metrics"]["RR@10"] == pytest.approx(1.0)
    run_lines = (workdir / "run.trec").read_text().splitlines()
    assert run_lines[0].split()[:3] == ["q1", "Q0", "d1"]
    assert "evaluate_retriever.split = %SPLIT" in (workdir / "config.gin").read_text()
    assert "BM25Retriever.k1 = 0.9" in (workdir / "operative_config.gin").read_text()


def test_command_line_entry_point(tmp_path):
    data = write_tiny_collection(tmp_path)
    workdir = tmp_path / "cli"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "irjax.main", "--gin_file=gin/eval/bm25.gin",
         f"--gin.DATA_DIR='{data}'", f"--gin.WORKDIR='{workdir}'", "--gin.SPLIT='test'"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((workdir / "metrics.json").read_text())["metrics"]["nDCG@10"] == pytest.approx(1.0)
    assert "nDCG@10" in proc.stdout  # the table is printed


def test_command_line_reports_unbound_macro(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "irjax.main", "--gin_file=gin/eval/bm25.gin"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "unbound gin macro(s): WORKDIR" in proc.stderr
