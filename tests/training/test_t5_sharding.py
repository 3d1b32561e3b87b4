"""A T5 Seq2SeqModel train step on 8 simulated devices (data=4, model=2) equals 1 device."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import ROOT
from tests.helpers.simulated_devices import max_diff, script_env

SCRIPT = Path(__file__).with_name("t5_step_script.py")


def test_t5_seq2seq_steps_match_across_meshes(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--workdir", str(tmp_path), "--reference"],
                          env=script_env(8), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    sharded, reference = result["sharded"], result["reference"]
    assert (sharded["devices"], reference["devices"]) == (8, 1)
    split = {path for path, spec in sharded["specs"].items() if "model" in spec}
    assert any("['mlp']['wi_0']['kernel']" in path for path in split), split   # MLP split
    assert any("['cross_attention']['query']" in path for path in split), split  # heads split
    assert "['lm_head']['kernel']" in split and "['shared']['embedding']" in split  # vocab split
    assert sorted(sharded["losses"]) == ["1", "2", "3"]
    assert max_diff(sharded["losses"], reference["losses"]) < 1e-5
    assert max_diff(sharded["params"], reference["params"]) < 1e-5
    initial_loss = sharded["losses"]["1"]
    assert np.isfinite(initial_loss) and sharded["losses"]["3"] != initial_loss  # it trained
