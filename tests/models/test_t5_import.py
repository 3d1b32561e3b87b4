"""Hugging Face T5.1.1 import: parity with transformers' own outputs (tests/fixtures/t5_tiny/
reference.npz and the seeded checkpoints it was computed from, tools/make_t5_reference.py) and
refusal of partial or mismatched checkpoints."""
import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from irjax.models.weight_import import CheckpointMismatchError
from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import T5, relative_position_bucket
from irjax.models.t5_import import expected_shapes, load_t5, load_t5_params, name_map
from tests.helpers.repo_scripts import load_tool

REFERENCE = np.load(Path(__file__).resolve().parents[1] / "fixtures" / "t5_tiny" / "reference.npz")
write_checkpoint = load_tool("t5_tiny_checkpoint").write_checkpoint


@functools.lru_cache(maxsize=None)
def checkpoint_root() -> Path:
    """The seeded checkpoints reference.npz was computed from (tools/make_t5_reference.py),
    written once per test session."""
    root = Path(tempfile.mkdtemp(prefix="irjax_t5_tiny_"))
    atexit.register(shutil.rmtree, root, True)
    for variant in ("untied", "tied"):
        write_checkpoint(root / variant, json.loads(str(REFERENCE[f"{variant}_config"])),
                         int(REFERENCE[f"{variant}_seed"]),
                         [str(n) for n in REFERENCE[f"{variant}_tensor_names"]],
                         json.loads(str(REFERENCE[f"{variant}_tensor_shapes"])))
    return root


def checkpoint_dir(variant: str) -> Path:
    return checkpoint_root() / variant


@pytest.mark.parametrize("variant", ["untied", "tied"])
def test_logits_match_hugging_face(variant):
    config, params = load_t5(checkpoint_dir(variant))
    assert config.tie_word_embeddings == (variant == "tied")
    ref = REFERENCE
    module = T5(config)
    encoded = module.apply({"params": params}, ref["input_ids"], ref["input_mask"], method="encode")
    logits = module.apply({"params": params}, ref["input_ids"], ref["input_mask"],
                          ref["decoder_input_ids"], ref["decoder_mask"])
    assert np.abs(np.asarray(encoded) - ref[f"{variant}_encoded"]).max() < 1e-4
    assert np.abs(np.asarray(logits) - ref[f"{variant}_logits"]).max() < 1e-4
    # Seq2SeqModel builds the same decoder inputs from EOS-terminated targets (causal mask only,
    # which changes nothing for right-padded targets at real positions).
    batch = {k: jnp.asarray(ref[k]) for k in ("targets", "targets_mask")}
    batch.update(inputs=jnp.asarray(ref["input_ids"]), inputs_mask=jnp.asarray(ref["input_mask"]))
    forced = np.asarray(Seq2SeqModel(config).logits(params, batch))
    real = ref["targets_mask"] > 0
    assert np.abs(forced[real] - ref[f"{variant}_logits"][real]).max() < 1e-4


def test_buckets_match_hugging_face():
    offsets = jnp.asarray(REFERENCE["bucket_offsets"])
    keys = [k for k in REFERENCE.files if k.startswith("buckets_")]
    assert len(keys) == 4
    for key in keys:
        _, kind, buckets, distance = key.split("_")
        ours = relative_position_bucket(offsets, kind == "bi", int(buckets), int(distance))
        np.testing.assert_array_equal(ours, REFERENCE[key], err_msg=key)


def test_name_map_covers_every_param_once():
    for variant in ("untied", "tied"):
        config, _ = load_t5(checkpoint_dir(variant))
        mapped = [path for path, _ in name_map(config).values()]
        assert len(mapped) == len(set(mapped))
        assert set(mapped) == set(expected_shapes(config))


def copy_checkpoint(tmp_path: Path, variant: str, edit) -> Path:
    target = tmp_path / variant
    target.mkdir()
    (target / "config.json").write_text((checkpoint_dir(variant) / "config.json").read_text())
    tensors = load_file(str(checkpoint_dir(variant) / "model.safetensors"))
    save_file(edit(tensors), str(target / "model.safetensors"))
    return target


def test_missing_tensor_is_named_with_the_file(tmp_path):
    name = "decoder.block.1.layer.1.EncDecAttention.k.weight"
    directory = copy_checkpoint(tmp_path, "untied", lambda t: {k: v for k, v in t.items() if k != name})
    with pytest.raises(CheckpointMismatchError) as err:
        load_t5(directory)
    message = str(err.value)
    assert str(directory / "model.safetensors") in message
    assert name in message and "decoder/layer_1/cross_attention/key/kernel" in message


def test_unexpected_and_misshapen_tensors_are_named(tmp_path):
    def edit(tensors):
        tensors["encoder.block.0.layer.1.DenseReluDense.wi.weight"] = np.zeros((48, 32), np.float32)
        tensors["encoder.block.1.layer.0.SelfAttention.q.weight"] = np.zeros((20, 32), np.float32)
        return tensors

    directory = copy_checkpoint(tmp_path, "untied", edit)
    config, _ = load_t5(checkpoint_dir("untied"))
    with pytest.raises(CheckpointMismatchError) as err:
        load_t5_params(directory, config)
    message = str(err.value)
    assert "unexpected" in message and "DenseReluDense.wi.weight" in message
    assert "original T5 (relu)" in message
    assert "encoder.block.1.layer.0.SelfAttention.q.weight (20, 32)" in message


def test_embedding_copies(tmp_path):
    """Exports that keep encoder/decoder.embed_tokens (or only those) load; a copy that differs
    from shared.weight, or a tied config given an untied lm_head, is refused."""
    config, reference = load_t5(checkpoint_dir("tied"))

    def only_copies(tensors):
        shared = tensors.pop("shared.weight")
        return {**tensors, "encoder.embed_tokens.weight": shared,
                "decoder.embed_tokens.weight": shared.copy()}

    params = load_t5_params(copy_checkpoint(tmp_path, "tied", only_copies), config)
    np.testing.assert_array_equal(params["shared"]["embedding"], reference["shared"]["embedding"])

    def different_lm_head(tensors):
        return {**tensors, "lm_head.weight": tensors["shared.weight"] + 1.0}

    (tmp_path / "tied").rename(tmp_path / "first")
    with pytest.raises(CheckpointMismatchError, match="lm_head.weight"):
        load_t5_params(copy_checkpoint(tmp_path, "tied", different_lm_head), config)


def test_missing_file_is_a_clear_error(tmp_path):
    config, _ = load_t5(checkpoint_dir("tied"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_t5_params(tmp_path, config)
