"""One device, one process with 8 devices and 2 processes with 4 devices each: the same corpus
vectors and identical run files, for dense and multi-vector (MaxSim, XTR) retrieval."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import ROOT
from tests.helpers.corpus import write_corpus

SCRIPT = Path(__file__).with_name("equivalence_script.py")
LAUNCHER = ROOT / "launch" / "local_multiprocess.py"


def run(out: Path, data: Path, devices: int = 1, processes: int = 1) -> Path:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IRJAX_CACHE_DIR": str(out / "cache"),
           "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    command = [sys.executable, str(SCRIPT), str(data), str(out)]
    if processes > 1:
        command = [sys.executable, str(LAUNCHER), "--num_processes", str(processes),
                   "--devices_per_process", str(devices), "--", *command]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def tokens(out: Path) -> dict[str, np.ndarray]:
    merged = {}
    for path in sorted(out.glob("tokens-*.npz")):
        with np.load(path) as f:
            merged.update({k: f[k] for k in f.files if k != "rows"})
    return merged


def test_devices_and_processes_do_not_change_vectors_or_runs(tmp_path):
    data = write_corpus(tmp_path / "data", 30)
    single = run(tmp_path / "1x1", data)
    for name, devices, processes in (("1x8", 8, 1), ("2x4", 4, 2)):
        other = run(tmp_path / name, data, devices, processes)
        for kind in ("dense", "maxsim", "xtr"):
            assert (other / f"{kind}.trec").read_text() == (single / f"{kind}.trec").read_text(), \
                (name, kind)
        np.testing.assert_allclose(np.load(other / "dense-vectors-0.npy"),
                                   np.load(single / "dense-vectors-0.npy"), atol=1e-6, rtol=0)
        mine, reference = tokens(other), tokens(single)
        assert sorted(mine) == sorted(reference) and len(mine) == 30
        for doc in reference:
            np.testing.assert_allclose(mine[doc], reference[doc], atol=1e-6, rtol=0)
    assert len(list((tmp_path / "2x4").glob("tokens-*.npz"))) == 2  # each process its share
