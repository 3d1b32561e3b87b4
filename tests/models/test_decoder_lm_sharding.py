"""DecoderLM's logical axis names shard it on the existing (data, model) mesh: 4 simulated
devices give the 1-device logits, with vocab, heads and MLP split over 'model'."""
from pathlib import Path

from tests.helpers.simulated_devices import run_result_script

SCRIPT = Path(__file__).with_name("decoder_lm_sharding_script.py")


def test_sharded_logits_equal_unsharded():
    result = run_result_script(SCRIPT, [], devices=4)
    for variant in ("gemma3", "qwen2"):
        run = result[variant]
        assert run["devices"] == 4
        split = {path for path, spec in run["specs"].items() if "model" in spec}
        assert "['embed']['embedding']" in split  # vocab
        assert "['layer_0']['mlp']['gate']['kernel']" in split  # mlp
        assert "['layer_0']['attention']['key']['kernel']" in split  # (kv) heads
        assert run["diff"] < 1e-5 * run["scale"], run
