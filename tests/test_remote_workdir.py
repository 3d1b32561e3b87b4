"""A remote WORKDIR (memory:// standing in for gs://) is still a transaction: locked through a
local lock file keyed by its URI, status.json first and last, the previous run's results moved
aside; training into one is refused before any work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irjax.files import atomic_write_text
from irjax.paths import as_path
from irjax.workdir import PREVIOUS_DIR, STATUS_NAME, read_status, workdir_transaction
from irjax.workdir_lock import WorkdirLock, WorkdirLockedError, remote_lock_path

ROOT = Path(__file__).resolve().parents[1]


HOLDER = ("import sys; from irjax.workdir_lock import WorkdirLock; "
          "WorkdirLock(sys.argv[1], command='remote-holder').acquire(); "
          "print('locked', flush=True); sys.stdin.read()")


def test_remote_workdir_is_locked_through_a_local_file_keyed_by_its_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    uri = "gs://some-bucket/runs/bm25"  # the lock never touches the store: no gcsfs needed
    path = remote_lock_path(as_path(uri))
    assert path.parent == tmp_path / "cache" / "workdir_locks"
    assert remote_lock_path(as_path(uri + "-2")) != path
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, uri], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLockedError, match=rf"workdir {uri} is in use .*pid "
                                                     rf"{holder.pid}.*remote-holder"):
            WorkdirLock(uri).acquire()
        WorkdirLock(uri + "-other").acquire().release()  # another URI: another lock
    finally:
        holder.kill()
        holder.wait()
    lock = WorkdirLock(uri).acquire()
    assert lock.previous is not None and lock.previous.pid == holder.pid  # taken over
    lock.release()
    assert not (tmp_path / "runs").exists()


def test_remote_workdir_transaction_moves_previous_results_aside(tmp_path, monkeypatch,
                                                                 memory_bucket):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    workdir = as_path(f"{memory_bucket}/w")
    with workdir_transaction(str(workdir)) as inside:
        assert inside == workdir and read_status(workdir)["state"] == "running"
        nested = WorkdirLock(f"{workdir}/zero_shot").acquire()  # a job run by the job
        sibling = WorkdirLock(f"{workdir}-2").acquire()
        assert nested.reentered and not sibling.reentered
        sibling.release()
        nested.release()
        atomic_write_text(workdir / "metrics.json", "first")
        atomic_write_text(workdir / "zero_shot" / "run.trec", "first run")
        atomic_write_text(workdir / "checkpoints" / "metrics.json", "state, kept")
    assert read_status(workdir)["state"] == "done"
    with pytest.raises(RuntimeError):
        with workdir_transaction(workdir):
            assert not (workdir / "metrics.json").exists()
            assert (workdir / PREVIOUS_DIR / "zero_shot" / "run.trec").read_text() == "first run"
            raise RuntimeError("second run fails")
    status = read_status(workdir)
    assert status["state"] == "failed" and "second run fails" in status["error"]
    previous = workdir / PREVIOUS_DIR
    assert (previous / "metrics.json").read_text() == "first"
    assert json.loads((previous / STATUS_NAME).read_text())["state"] == "done"
    assert (workdir / "checkpoints" / "metrics.json").read_text() == "state, kept"
    with workdir_transaction(workdir):
        pass
    assert not (workdir / PREVIOUS_DIR).exists() and read_status(workdir)["state"] == "done"


def test_training_into_a_remote_workdir_is_refused_up_front():
    from irjax.errors import ConfigError
    from irjax.training.trainer import Trainer
    from irjax.training.trainer_config import TrainerConfig

    with pytest.raises(ConfigError, match=r"WORKDIR gs://b/train is remote, but training needs "
                                          "a local WORKDIR"):
        Trainer(None, "gs://b/train", TrainerConfig(num_steps=1), None)  # type: ignore[arg-type]
