"""A BERT dual-encoder train step on 8 simulated devices (data=4, model=2) equals 1 device."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import ROOT
from tests.helpers.simulated_devices import max_diff, script_env

SCRIPT = Path(__file__).with_name("dual_encoder_step_script.py")


def test_bert_dual_encoder_steps_match_across_meshes(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--workdir", str(tmp_path), "--reference"],
                          env=script_env(8), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    sharded, reference = result["sharded"], result["reference"]
    assert (sharded["devices"], reference["devices"]) == (8, 1)
    split = [path for path, spec in sharded["specs"].items() if "model" in spec]
    assert any("['wi']['kernel']" in path for path in split), split  # MLP kernels split
    assert any("query" in path for path in split), split                          # attention heads split
    assert sorted(sharded["losses"]) == ["1", "2", "3"]
    assert max_diff(sharded["losses"], reference["losses"]) < 1e-5
    assert max_diff(sharded["params"], reference["params"]) < 1e-5
    initial_loss = sharded["losses"]["1"]
    assert np.isfinite(initial_loss) and sharded["losses"]["3"] != initial_loss  # it trained


EFFICIENCY = {  # each switch alone, and all together, on the data=4 x model=2 mesh
    "grad_cache": {"efficiency": {"grad_cache_tokens": 20}},
    "fused_attention": {"efficiency": {"attention": "fused"}},
    "remat_dots": {"efficiency": {"remat": "dots"}},
    "flatten": {"optimizer": {"flatten": True}},
    "mu_bfloat16": {"optimizer": {"mu_dtype": "bfloat16"}},
    "unsafe_rbg": {"trainer": {"prng_impl": "unsafe_rbg"}},
    "all": {"efficiency": {"grad_cache_tokens": 20, "attention": "fused", "remat": "full"},
            "optimizer": {"mu_dtype": "bfloat16"}, "trainer": {"prng_impl": "rbg"}},
}


def test_efficiency_switches_keep_the_loss_and_parameters_on_8_devices(tmp_path):
    """Dropout off, each switch against the plain run on the same 8-device mesh. Adam divides by
    sqrt(v), so float32 noise in the near-zero gradients of attention key kernels grows to ~6e-5 in
    the parameters after 3 steps (the plain 8-device run differs from 1 device by that much), hence
    1e-4 for switches that only reorder float32 sums; the bfloat16 first moment adds its rounding
    (2^-8 relative), hence 5e-4. The dropout RNG is unused with dropout off: identical."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--workdir", str(tmp_path), "--reference",
                           "--no-dropout", "--variants", json.dumps(EFFICIENCY)],
                          env=script_env(8), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    plain = result["sharded"]
    assert plain["devices"] == 8 and result["reference"]["devices"] == 1
    assert max_diff(plain["params"], result["reference"]["params"]) < 1e-4
    assert result["unsafe_rbg"]["params"] == plain["params"]
    for name in ("grad_cache", "fused_attention", "remat_dots", "flatten"):
        assert max_diff(result[name]["losses"], plain["losses"]) < 1e-5, name
        assert max_diff(result[name]["params"], plain["params"]) < 1e-4, name
    for name in ("mu_bfloat16", "all"):
        assert max_diff(result[name]["losses"], plain["losses"]) < 1e-4, name
        assert 0 < max_diff(result[name]["params"], plain["params"]) < 5e-4, name
    assert plain["losses"]["3"] != plain["losses"]["1"]  # it trained
