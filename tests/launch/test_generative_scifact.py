"""launch/generative_scifact.sh: the stage runner the H100 results came from. The stages' jobs are
tested where they live; here: the script parses, names only configs that exist, refuses an unknown
stage by name, and packs a finished stage's small outputs without checkpoints."""
import re
import subprocess
import tarfile
from pathlib import Path

SCRIPT = Path("launch/generative_scifact.sh")


def test_script_parses_and_names_existing_configs():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    named = set(re.findall(r"gin/train/[\w.]+\.gin", text)) | set(re.findall(r"tools/\w+\.py", text))
    assert "gin/train/dsi_qg_small_scifact.gin" in named and "gin/train/qg_scifact.gin" in named
    missing = sorted(p for p in named if not Path(p).exists())
    assert not missing, missing


def test_unknown_stage_is_refused_by_name(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT), "no_such_stage"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "WORKROOT": str(tmp_path / "w")})
    assert out.returncode == 1  # one failed stage
    assert "unknown stage 'no_such_stage'" in out.stderr
    assert "FAILED" in out.stdout


def test_failed_stage_still_packs_its_outputs_without_checkpoints(tmp_path):
    stage = "qg"
    # A python that fails at once stands in for the job; the stage's files are packed anyway.
    root, results = tmp_path / "w", tmp_path / "results"
    run_dir = root / "qg_scifact"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "big").write_bytes(b"0" * 1000)
    (run_dir / "training_summary.json").write_text("{}")
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    fake_python.chmod(0o755)
    out = subprocess.run(["bash", str(SCRIPT), stage], capture_output=True, text=True, env={
        "PATH": "/usr/bin:/bin", "WORKROOT": str(root), "RESULTS_TO": str(results),
        "PY": str(fake_python)})
    assert out.returncode == 1 and f"== {stage}: FAILED" in out.stdout
    with tarfile.open(results / f"{stage}.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("qg_scifact/training_summary.json") for n in names)
    assert any(n.endswith("logs/qg.log") for n in names)
    assert not any("checkpoints" in n for n in names)
    assert not (results / f"{stage}.tar.gz.tmp").exists()
