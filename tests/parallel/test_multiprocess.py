"""2 processes x 4 CPU devices (gloo over localhost) give the same training as 1 x 8 devices;
the launcher's environment and failure handling; initialize_distributed's argument checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from irjax.parallel.distributed import initialize_distributed
from tests.helpers import ROOT
from tests.helpers.repo_scripts import load_launcher
from tests.helpers.simulated_devices import max_diff, run_result_script

LAUNCHER = ROOT / "launch" / "local_multiprocess.py"
SCRIPT = Path(__file__).with_name("sharded_step_script.py")  # test_partitioning.py's step script
STEP_ARGS = ["--data", "4", "--model", "2", "--steps", "3"]
TOL = 1e-5


def test_two_processes_match_one_process_with_eight_devices():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(LAUNCHER), "--num_processes", "2", "--devices_per_process", "4",
         "--timeout_s", "150", "--", sys.executable, str(SCRIPT), *STEP_ARGS],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    lines = proc.stdout.splitlines()
    results = [line for line in lines if "RESULT " in line]
    assert len(results) == 1 and results[0].startswith("[0] RESULT "), "only process 0 logs"
    shards = sorted(json.loads(line.split("SHARD ", 1)[1]) for line in lines if "SHARD " in line)
    assert shards == [[0, [0, 8]], [1, [8, 16]]]  # each process read only its half
    multi = json.loads(results[0].split("RESULT ", 1)[1])
    assert multi["collectives"] == "gloo"
    two_by_four = multi["sharded"]
    assert (two_by_four["processes"], two_by_four["devices"]) == (2, 8)

    one_by_eight = run_result_script(SCRIPT, STEP_ARGS, devices=8)["sharded"]
    assert one_by_eight["processes"] == 1
    assert np.abs(np.subtract(two_by_four["losses"], one_by_eight["losses"])).max() < TOL
    assert abs(two_by_four["checksum"] - one_by_eight["checksum"]) < TOL * 100  # sum of ~2.7k
    assert max_diff(two_by_four["params"], one_by_eight["params"]) < TOL
    assert two_by_four["mlp_kernel_spec"] == [None, "model"]


PRINT_ENV = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in "
             "('XLA_FLAGS', 'JAX_PLATFORMS', 'IRJAX_COORDINATOR', 'IRJAX_NUM_PROCESSES', "
             "'IRJAX_PROCESS_ID')}))")


def test_launcher_gives_each_process_its_environment():
    launcher = load_launcher()
    base = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_foo=1")
    results = launcher.launch_local([sys.executable, "-c", PRINT_ENV], 2, 3, env=base,
                                    stream=None, timeout_s=60)
    envs = [json.loads(r.output[-1]) for r in results]
    assert [e["IRJAX_PROCESS_ID"] for e in envs] == ["0", "1"]
    assert {e["IRJAX_NUM_PROCESSES"] for e in envs} == {"2"}
    assert {e["JAX_PLATFORMS"] for e in envs} == {"cpu"}
    assert envs[0]["IRJAX_COORDINATOR"] == envs[1]["IRJAX_COORDINATOR"]
    assert envs[0]["IRJAX_COORDINATOR"].startswith("localhost:")
    flags = envs[0]["XLA_FLAGS"].split()
    assert sorted(flags) == ["--xla_foo=1", "--xla_force_host_platform_device_count=3"]


def test_launcher_stops_the_others_when_one_fails():
    launcher = load_launcher()
    code = ("import os, sys, time\n"
            "if os.environ['IRJAX_PROCESS_ID'] == '1': print('boom'); sys.exit(3)\n"
            "time.sleep(60)")
    start = time.monotonic()
    with pytest.raises(launcher.LaunchError, match="process 1 exited with code 3") as info:
        launcher.launch_local([sys.executable, "-c", code], 2, 1, stream=None, timeout_s=60)
    assert time.monotonic() - start < 20
    survivor, failed = info.value.results
    assert survivor.returncode != 0  # killed, not left sleeping
    assert failed.returncode == 3 and failed.output == ["boom"]
    with pytest.raises(launcher.LaunchError, match="timed out"):
        launcher.launch_local([sys.executable, "-c", "import time; time.sleep(60)"], 1, 1,
                              stream=None, timeout_s=0.5)


def test_launcher_cli_exit_code_and_prefixes():
    ok = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes", "2",
                         "--devices_per_process", "1", "--", sys.executable, "-c", "print('hi')"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and sorted(ok.stdout.splitlines()) == ["[0] hi", "[1] hi"]
    bad = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes", "1", "--",
                          sys.executable, "-c", "raise SystemExit(5)"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "exited with code 5" in bad.stderr


def test_initialize_distributed_is_a_noop_for_one_process(monkeypatch):
    for name in ("IRJAX_COORDINATOR", "IRJAX_NUM_PROCESSES", "IRJAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert initialize_distributed() is False
    assert initialize_distributed("localhost:1", 1, 0) is False


def test_initialize_distributed_argument_errors(monkeypatch):
    monkeypatch.setenv("IRJAX_NUM_PROCESSES", "2")
    monkeypatch.delenv("IRJAX_COORDINATOR", raising=False)
    monkeypatch.delenv("IRJAX_PROCESS_ID", raising=False)
    with pytest.raises(ValueError, match="IRJAX_COORDINATOR=host:port"):
        initialize_distributed()
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
        initialize_distributed("localhost:1", None, 2)
    monkeypatch.setenv("IRJAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="IRJAX_NUM_PROCESSES='two' must be an integer"):
        initialize_distributed()
