"""The entry point: gin flag rewriting, early validation, a whole BM25 run on a tiny collection, and
how errors reach the user (one message and exit status 2 for their mistakes, a traceback for bugs)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irjax import gin_config

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("clean_gin")


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m irjax.main ARGS` from the checkout, on CPU, importing this checkout's irjax."""
    return subprocess.run(
        [sys.executable, "-m", "irjax.main", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **env),
    )


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
    proc = run_cli("--gin_file=gin/eval/bm25.gin", f"--gin.DATA_DIR='{data}'", f"--gin.WORKDIR='{workdir}'",
                   "--gin.SPLIT='test'")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((workdir / "metrics.json").read_text())["metrics"]["nDCG@10"] == pytest.approx(1.0)
    assert "nDCG@10" in proc.stdout  # the table is printed


def assert_user_error(proc: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit status 2 and one `irjax: error:` message holding `expected`, with no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    message = proc.stderr[proc.stderr.index("irjax: error: "):]
    for text in expected:
        assert text in message, message
    assert len(message.splitlines()) <= 5, message


def test_command_line_reports_unbound_macro():
    assert_user_error(run_cli("--gin_file=gin/eval/bm25.gin"), "unbound gin macro(s): WORKDIR")


def test_malformed_corpus_line_is_one_message(tmp_path):
    data = write_tiny_collection(tmp_path)
    corpus = data / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join([lines[0], '{"_id": "d2", "text": ', *lines[2:]]) + "\n")
    proc = run_cli("--gin_file=gin/eval/bm25.gin", f"--gin.DATA_DIR='{data}'",
                   f"--gin.WORKDIR='{tmp_path / 'work'}'")
    assert_user_error(proc, f"irjax: error: {corpus}:2: malformed JSON", "fix or remove this line",
                      "(in configurable 'evaluate_retriever')")
    assert "In call to configurable" not in proc.stderr  # gin's wrapper lines are cut


def test_unknown_gin_parameter_is_one_message():
    proc = run_cli("--gin_file=gin/eval/bm25.gin", "--gin.WORKDIR='w'", "--gin.evaluate_retriever.topk=5")
    assert_user_error(proc, "Configurable 'evaluate_retriever' doesn't have a parameter named 'topk'",
                      "evaluate_retriever.topk=5")


def test_missing_gin_file_is_one_message():
    assert_user_error(run_cli("--gin_file=gin/eval/nope.gin"), "gin file 'gin/eval/nope.gin' not found")


def test_traceback_of_a_user_error_on_request():
    proc = run_cli("--gin_file=gin/eval/nope.gin", IRJAX_TRACEBACK="1")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "irjax: error: gin file 'gin/eval/nope.gin'" in proc.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
    """BM25Retriever bound where evaluate_retriever expects a Retriever (SparseRetriever wraps it)
    fails deep inside irjax with an AttributeError no check names: it stays a bug, with its traceback."""
    data = write_tiny_collection(tmp_path)
    proc = run_cli("--gin_file=gin/eval/bm25.gin", f"--gin.DATA_DIR='{data}'",
                   f"--gin.WORKDIR='{tmp_path / 'work'}'", "--gin.evaluate_retriever.retriever=@BM25Retriever()")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "AttributeError: 'BM25Retriever' object has no attribute 'name'" in proc.stderr
    assert "irjax: error:" not in proc.stderr


# ---------------------------------------------------------------- messages, without a subprocess


def error_of(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def test_gin_call_errors_are_config_errors_with_the_configurable_named(tmp_path):
    gin_config.parse([], [f"WORKDIR='{tmp_path}'", "irjax.run.job = @evaluate_retriever",
                          "evaluate_retriever.split = 'test'"])
    error = error_of(gin_config.run_job)
    assert isinstance(error, TypeError)  # gin's own error, raised before evaluate_retriever starts
    assert gin_config.user_error_message(error) == (
        "evaluate_retriever() missing 3 required positional arguments: 'dataset', 'workdir', and "
        "'retriever'\n  (in configurable 'evaluate_retriever')")


def test_only_user_errors_get_a_message():
    def library_bug():
        raise RuntimeError("an invariant broke")
    assert gin_config.user_error_message(error_of(library_bug)) is None
    assert gin_config.user_error_message(error_of(lambda: gin_config.validate_macros("%NOPE"))) == (
        "unbound gin macro(s): NOPE. Bind them, e.g. --gin.NOPE=...")


@pytest.mark.parametrize("binding, expected", [
    ("WORKDIR=workdir", "gin syntax error: cannot parse 'workdir' as a value\n  In the bindings, line 1\n"
                        "    WORKDIR=workdir\n  Values are Python literals, so strings need quotes"),
    ("WORKDIR='w' 5", "gin syntax error: Expected newline\n  In the bindings, line 1\n    WORKDIR='w' 5"),
    ("WORKDIR=('w'", "gin syntax error: EOF in multi-line statement (an unclosed bracket or string?)"),
    ("evaluat_retriever.top_k=5", "No configurable matching 'evaluat_retriever'.\n  In bindings string line 1"),
])
def test_gin_parse_errors_say_what_and_where(binding, expected):
    error = error_of(lambda: gin_config.parse(["gin/eval/bm25.gin"], [binding]))
    assert isinstance(error, gin_config.GinConfigError)
    assert gin_config.user_error_message(error).startswith(expected)
