"""Running test scripts in a subprocess on N simulated CPU devices, and comparing their results.

JAX fixes the device count when it starts, so every multi-device check runs a script under
XLA_FLAGS=--xla_force_host_platform_device_count=N in a fresh process; the scripts print one
`RESULT {json}` line that the tests compare against a 1-device reference.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import ROOT


def script_env(devices: int) -> dict[str, str]:
    """CPU-only, `devices` simulated devices, this checkout importable, no multi-process setup
    inherited from the caller (the launcher sets those variables itself)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for name in ("IRJAX_COORDINATOR", "IRJAX_NUM_PROCESSES", "IRJAX_PROCESS_ID"):
        env.pop(name, None)
    return env


def run_result_script(script: Path, args: list[str], devices: int, timeout: float = 240) -> dict:
    """Runs `script` on `devices` simulated CPU devices; returns its one RESULT json."""
    proc = subprocess.run([sys.executable, str(script), *args], env=script_env(devices), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout[-2000:]
    return json.loads(lines[0][len("RESULT "):])


def max_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between two dicts of arrays with the same keys."""
    assert a.keys() == b.keys()
    return max(float(np.abs(np.subtract(a[k], b[k])).max()) for k in a)
