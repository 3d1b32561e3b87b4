"""launch/msmarco_pod.sh (not run here: no TPU): it parses, names only configs that exist, refuses
an unknown stage by name, and hands each stage's command to tpu_vm.sh with the shared paths."""
import re
import subprocess
from pathlib import Path

import gin
import pytest

from irjax import gin_config

pytestmark = pytest.mark.usefixtures("clean_gin")
SCRIPT = Path("launch/msmarco_pod.sh")


def test_script_parses_and_names_existing_configs_that_parse():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    named = set(re.findall(r"gin/[\w/]+\.gin", SCRIPT.read_text()))
    assert named == {"gin/encode/minilm.gin", "gin/pod/msmarco_minilm.gin"}
    for config in sorted(named):
        gin.clear_config()
        gin_config.parse([config], ["WORKDIR='unused'"])


def test_stages_call_tpu_vm_with_the_shared_paths(tmp_path):
    launch = tmp_path / "launch"
    launch.mkdir()
    (launch / "msmarco_pod.sh").write_text(SCRIPT.read_text())
    (launch / "tpu_vm.sh").write_text('#!/bin/sh\necho "tpu_vm $*"\n')
    (launch / "tpu_vm.sh").chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "ROOT": "/shared"}
    out = subprocess.run(["bash", str(launch / "msmarco_pod.sh"), "pod", "zone", "encode"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "tpu_vm run pod zone -- --gin_file=gin/encode/minilm.gin" in out
    assert "--gin.DATA_DIR='/shared/data/msmarco'" in out
    assert "--gin.WORKDIR='/shared/msmarco_minilm/encode'" in out
    out = subprocess.run(["bash", str(launch / "msmarco_pod.sh"), "pod", "zone", "evaluate"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "--gin.EMBEDDINGS='/shared/msmarco_minilm/encode/embeddings'" in out
    bad = subprocess.run(["bash", str(launch / "msmarco_pod.sh"), "pod", "zone", "train"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown stage train" in bad.stderr
