"""Two training runs on one workdir: the second stops at once naming the first, which finishes
undisturbed; with several processes only process 0 locks and the others follow its outcome."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from irjax.workdir import read_status
from irjax.workdir_lock import WorkdirLock

from tests.helpers import ROOT

LAUNCHER = ROOT / "launch" / "local_multiprocess.py"

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("toy_train_script.py")


def _env(devices: int = 1) -> dict[str, str]:
    return dict(os.environ, JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def test_second_training_run_on_a_busy_workdir_exits_at_once_and_the_first_is_undisturbed(
        tmp_path):
    workdir = tmp_path / "w"
    args = [sys.executable, str(SCRIPT), "--lock", "--workdir", str(workdir), "--steps", "24",
            "--checkpoint_every", "2", "--data", "1", "--sync"]
    first = subprocess.Popen([*args, "--announce", "--batch_delay", "0.3"], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:  # wait until it trains and has saved checkpoints
            if line.strip() == "batch 5":
                break
        start = time.perf_counter()
        second = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=120)
        elapsed = time.perf_counter() - start
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert second.returncode != 0
    assert "WorkdirLockedError" in second.stderr and f"pid {first.pid} on host" in second.stderr
    assert elapsed < 30 and "RESULT" not in second.stdout  # stopped before training
    assert first.returncode == 0, err[-3000:]
    result = json.loads(out.split("RESULT ", 1)[1])["sharded"]
    assert (result["step"], result["resumed_from"]) == (24, "scratch")
    steps = collections.Counter(json.loads(line)["step"]
                                for line in (workdir / "metrics.jsonl").read_text().splitlines())
    assert sorted(steps) == list(range(1, 25)) and set(steps.values()) == {1}  # one writer
    assert read_status(workdir)["state"] == "done"


def test_multiprocess_run_locks_once_and_every_process_stops_on_a_busy_workdir(tmp_path):
    workdir = tmp_path / "w"
    launch = [sys.executable, str(LAUNCHER), "--num_processes", "2", "--devices_per_process",
              "1", "--timeout_s", "150", "--", sys.executable, str(SCRIPT), "--lock",
              "--workdir", str(workdir), "--steps", "2", "--data", "2", "--sync"]
    with WorkdirLock(workdir, command="someone else's run"):
        busy = subprocess.run(launch, env=_env(), cwd=ROOT, capture_output=True, text=True,
                              timeout=180)
    assert busy.returncode != 0
    assert "[0] " in busy.stdout and "someone else's run" in busy.stdout
    assert "process 0 could not lock workdir" in busy.stdout  # process 1 did not hang
    assert not (workdir / "checkpoints").exists()
    free = subprocess.run(launch, env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert free.returncode == 0, (free.stdout + free.stderr)[-3000:]
    status = read_status(workdir)
    assert status["state"] == "done" and status["pid"] != os.getpid()


def test_a_killed_locked_run_resumes_from_its_checkpoints_and_reports_the_dead_holder(tmp_path):
    workdir = tmp_path / "w"
    args = [sys.executable, str(SCRIPT), "--lock", "--workdir", str(workdir), "--steps", "12",
            "--checkpoint_every", "2", "--data", "1", "--sync"]
    killed = subprocess.Popen([*args, "--announce"], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    for line in killed.stdout:
        if line.strip() == "batch 7":
            killed.kill()
            break
    killed.wait()
    assert read_status(workdir)["state"] == "running"  # what a kill -9 leaves
    rerun = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout.split("RESULT ", 1)[1])["sharded"]
    assert result["resumed_from"] == "workdir" and result["start_step"] >= 4
    assert f"pid {killed.pid}" in rerun.stderr and "never finished" in rerun.stderr
    status = read_status(workdir)
    assert status["state"] == "done" and f"pid {killed.pid}" in status["took_over_lock_from"]
