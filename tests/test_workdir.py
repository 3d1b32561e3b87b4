"""A workdir is a transaction: one run at a time (an OS lock naming its holder), status.json,
and no result of an earlier run left next to a later run's config."""
from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import gin
import pytest

from irjax import gin_config
from irjax.data.collection import CollectionError
from irjax.workdir import PREVIOUS_DIR, STATUS_NAME, UNFINISHED_DIR, read_status, workdir_transaction
from irjax.workdir_lock import WorkdirLock, WorkdirLockedError

from test_main import write_tiny_collection

pytestmark = pytest.mark.usefixtures("clean_gin")

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, JAX_PLATFORMS="cpu",
           PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
HOLDER = ("import sys; from irjax.workdir_lock import WorkdirLock; "
          "WorkdirLock(sys.argv[1], command='holder-command --x').acquire(); "
          "print('locked', flush=True); sys.stdin.read()")


@pytest.fixture
def holder(tmp_path):
    """Starts a process holding a workdir's lock; yields (workdir, process)."""
    processes = []

    def start(workdir: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], env=ENV,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in processes:
        proc.kill()
        proc.wait()


def test_second_run_fails_at_once_naming_the_holder(tmp_path, holder):
    proc = holder(tmp_path / "w")
    start = time.perf_counter()
    with pytest.raises(WorkdirLockedError) as error:
        WorkdirLock(tmp_path / "w").acquire()
    assert time.perf_counter() - start < 1
    message = str(error.value)
    assert f"pid {proc.pid} on host" in message and "holder-command --x" in message
    assert str(tmp_path / "w") in message


def test_lock_of_a_killed_holder_is_taken_over_with_a_warning(tmp_path, holder, caplog):
    proc = holder(tmp_path / "w")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with caplog.at_level(logging.WARNING), WorkdirLock(tmp_path / "w") as lock:
        assert lock.previous is not None and lock.previous.pid == proc.pid
        assert lock.previous.command == "holder-command --x"
    assert f"pid {proc.pid}" in caplog.text and "ended without releasing" in caplog.text
    with WorkdirLock(tmp_path / "w") as lock:  # released cleanly this time: nothing to report
        assert lock.previous is None


def test_nested_jobs_reenter_their_own_lock_and_the_outer_keeps_it(tmp_path):
    workdir = tmp_path / "w"
    with workdir_transaction(workdir):
        with WorkdirLock(workdir) as same, workdir_transaction(workdir / "zero_shot"):
            assert same.reentered
        assert read_status(workdir)["state"] == "running"  # the inner exit published nothing
        probe = subprocess.run([sys.executable, "-c", HOLDER, str(workdir)], env=ENV,
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "WorkdirLockedError" in probe.stderr
    assert read_status(workdir)["state"] == "done"


def write_results(workdir: Path, tag: str) -> None:
    for name in ("metrics.json", "run.trec", "operative_config.gin", "config.gin"):
        (workdir / name).write_text(tag)
    (workdir / "zero_shot").mkdir(exist_ok=True)
    (workdir / "zero_shot" / "metrics.json").write_text(tag)
    (workdir / "checkpoints").mkdir(exist_ok=True)
    (workdir / "checkpoints" / "metrics.json").write_text("state, not a result")


def test_failed_run_after_a_successful_one_leaves_no_stale_results(tmp_path):
    workdir = tmp_path / "w"
    with workdir_transaction(workdir):
        write_results(workdir, "run 1")
    assert read_status(workdir)["state"] == "done"
    with pytest.raises(RuntimeError, match="bad input"):
        with workdir_transaction(workdir):
            (workdir / "config.gin").write_text("run 2")
            raise RuntimeError("bad input")
    status = read_status(workdir)
    assert status["state"] == "failed" and status["error"] == "RuntimeError: bad input"
    assert status["previous_results"] == str(workdir / PREVIOUS_DIR)
    assert not (workdir / "metrics.json").exists() and not (workdir / "zero_shot").exists()
    previous = workdir / PREVIOUS_DIR
    assert (previous / "metrics.json").read_text() == "run 1"
    assert (previous / "zero_shot" / "metrics.json").read_text() == "run 1"
    assert json.loads((previous / STATUS_NAME).read_text())["state"] == "done"
    assert (workdir / "checkpoints" / "metrics.json").exists()  # state is never moved
    with workdir_transaction(workdir):
        write_results(workdir, "run 3")
    assert read_status(workdir)["state"] == "done"
    assert not previous.exists() and (workdir / "metrics.json").read_text() == "run 3"


def test_partial_results_of_a_killed_run_are_kept_apart_from_the_last_completed_run(tmp_path,
                                                                                    caplog):
    workdir = tmp_path / "w"
    with workdir_transaction(workdir):
        write_results(workdir, "complete")
    with pytest.raises(RuntimeError):
        with workdir_transaction(workdir):
            raise RuntimeError("first failure")
    # a run killed with SIGKILL: status says running, a partial result exists
    (workdir / STATUS_NAME).write_text(json.dumps({"state": "running", "pid": 999999999,
                                                   "started": "earlier"}))
    (workdir / "paths" / "maxsim").mkdir(parents=True)
    (workdir / "paths" / "maxsim" / "metrics.json").write_text("partial")
    with caplog.at_level(logging.WARNING), workdir_transaction(workdir):
        assert "never finished" in caplog.text
        previous = workdir / PREVIOUS_DIR
        assert (previous / "metrics.json").read_text() == "complete"
        assert (previous / UNFINISHED_DIR / "paths" / "maxsim" / "metrics.json").read_text() == \
            "partial"
        assert not (workdir / "paths").exists()


def test_training_history_and_state_stay_where_a_resumed_run_expects_them(tmp_path):
    workdir = tmp_path / "w"
    kept = [workdir / "eval" / "step_5" / "metrics.json",  # periodic eval: not repeated on resume
            workdir / "phase1" / "checkpoints" / "7" / "metrics.json",  # state at any depth
            workdir / "metrics.jsonl", workdir / "docids.json"]
    moved = [workdir / "metrics.json", workdir / "phase1" / "eval" / "memorization.json"]
    for path in kept + moved:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    with workdir_transaction(workdir):
        assert all(p.exists() for p in kept) and not any(p.exists() for p in moved)
    (workdir / STATUS_NAME).write_text("{not json")
    (workdir / "metrics.json").write_text("from a run whose status is unreadable")
    with workdir_transaction(workdir):
        assert (workdir / PREVIOUS_DIR / UNFINISHED_DIR / "metrics.json").exists()


def test_cli_evaluation_on_a_locked_workdir_exits_at_once_and_touches_nothing(tmp_path, holder):
    data = write_tiny_collection(tmp_path)
    workdir = tmp_path / "w"
    workdir.mkdir()
    write_results(workdir, "the holder's")
    proc = holder(workdir)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.is_file()}
    start = time.perf_counter()
    second = subprocess.run(
        [sys.executable, "-m", "irjax.main", "--gin_file=gin/eval/bm25.gin",
         f"--gin.DATA_DIR='{data}'", f"--gin.WORKDIR='{workdir}'"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    assert second.returncode == 2  # a user error: one message, no traceback
    assert "irjax: error: workdir" in second.stderr and "Traceback" not in second.stderr
    assert "in use by another irjax run" in second.stderr and f"pid {proc.pid}" in second.stderr
    assert "holder-command --x" in second.stderr
    assert elapsed < 60  # interpreter and import time only: no data was read
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.is_file()}
    assert after == before  # no config.gin, status.json or result of the second run


def test_failed_evaluation_after_a_successful_one_through_the_config(tmp_path):
    data = write_tiny_collection(tmp_path)
    workdir = tmp_path / "w"
    gin_config.parse(["gin/eval/bm25.gin"], [f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'"])
    gin_config.run_job()
    mode = 0o666 & ~_umask()
    for name in ("metrics.json", "run.trec", "per_query.jsonl", "config.gin", STATUS_NAME):
        assert stat.S_IMODE((workdir / name).stat().st_mode) == mode, name
    assert read_status(workdir)["state"] == "done"
    (data / "corpus.jsonl").write_text('{"_id": "d1", "text": "no closing brace"\n')
    gin.clear_config()
    gin_config.parse(["gin/eval/bm25.gin"], [f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'",
                                             "BM25Retriever.k1 = 1.2"])
    with pytest.raises(CollectionError, match=r"corpus\.jsonl:1: malformed JSON"):
        gin_config.run_job()
    assert "k1 = 1.2" in (workdir / "config.gin").read_text()
    for name in ("metrics.json", "run.trec", "per_query.jsonl", "operative_config.gin"):
        assert not (workdir / name).exists(), name
        assert (workdir / PREVIOUS_DIR / name).exists(), name
    assert "k1 = 0.9" in (workdir / PREVIOUS_DIR / "config.gin").read_text()
    status = read_status(workdir)
    assert status["state"] == "failed" and "malformed JSON" in status["error"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
