"""Golden table of how BERT and T5 parameters are split on the ('data', 'model') mesh.

A changed logical axis name in a model, or a changed rule in DEFAULT_RULES, moves parameters
between replicated and split: memory per device and the collectives of every step change, yet no
numerical test fails (sharded steps still match one device). So, as MaxText does, the partition
spec of every parameter is committed in tests/fixtures/partition_specs.json and any change shows
up here as a per-parameter diff to review.

The specs are derived without devices, exactly as the Trainer derives them: `jax.eval_shape` of
the model's `init_variables`, then `logical_shardings` under DEFAULT_RULES, here on an abstract
data=4 x model=2 mesh (so every split dimension is also checked to divide by the model axis).
Models: the dual encoder's BERT (small dimensions, two layers) and T5 preset 'tiny' (untied).

After an intended change, regenerate the table and review the diff before committing it:

    IRJAX_UPDATE_GOLDEN=1 python -m pytest tests/parallel/test_partition_specs.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType

from irjax.models.bert import BertConfig
from irjax.models.dual_encoder_training import DualEncoderModel
from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import T5Config
from irjax.parallel.partitioning import DEFAULT_RULES, MESH_AXES, logical_shardings

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "partition_specs.json"
UPDATE_VAR = "IRJAX_UPDATE_GOLDEN"
MESH_SHAPE = {"data": 4, "model": 2}
ABOUT = ("Partition spec of every parameter under irjax.parallel.partitioning.DEFAULT_RULES, "
         "checked by tests/parallel/test_partition_specs.py; regenerate with IRJAX_UPDATE_GOLDEN=1 "
         "python -m pytest tests/parallel/test_partition_specs.py and review the diff.")

SMALL_BERT = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)


def _ids(rows: int, length: int) -> np.ndarray:
    return np.ones((rows, length), np.int32)


# name -> (model, one example batch for init_variables)
MODELS = {
    "bert_dual_encoder": (DualEncoderModel(SMALL_BERT),
                          {"pos_ids": _ids(1, 8), "pos_mask": _ids(1, 8)}),
    "t5_tiny": (Seq2SeqModel(T5Config.preset("tiny")),
                {"inputs": _ids(1, 8), "inputs_mask": _ids(1, 8), "targets": _ids(1, 4)}),
}


def _axes(entry: Any) -> Any:
    """A PartitionSpec entry as JSON: null (whole), "model", or a list of mesh axes."""
    return entry if entry is None or isinstance(entry, str) else list(entry)


def partition_specs(model: Any, batch: dict, rules=DEFAULT_RULES) -> dict[str, list]:
    """'path/to/param' -> its PartitionSpec as a JSON list, for the model's parameter tree."""
    mesh = AbstractMesh(tuple(MESH_SHAPE[a] for a in MESH_AXES), MESH_AXES,
                        axis_types=(AxisType.Auto,) * len(MESH_AXES))
    abstract = jax.eval_shape(model.init_variables, jax.random.key(0), batch)
    shardings = logical_shardings(abstract, mesh, rules)
    flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): [_axes(a) for a in sharding.spec]
            for path, sharding in flat}


def current_table(rules=DEFAULT_RULES) -> dict[str, Any]:
    return {"about": ABOUT, "mesh": MESH_SHAPE, "rules": [list(rule) for rule in rules],
            "models": {name: partition_specs(model, batch, rules)
                       for name, (model, batch) in MODELS.items()}}


def dump(table: dict[str, Any]) -> str:
    """JSON with one parameter per line, so that a changed spec is a one-line diff."""
    lines = ["{", f'  "about": {json.dumps(table["about"])},',
             f'  "mesh": {json.dumps(table["mesh"])},', f'  "rules": {json.dumps(table["rules"])},',
             '  "models": {']
    models = list(table["models"].items())
    for i, (name, specs) in enumerate(models):
        lines.append(f"    {json.dumps(name)}: {{")
        items = sorted(specs.items())
        lines += [f"      {json.dumps(path)}: {json.dumps(spec)}" + ("," if j < len(items) - 1 else "")
                  for j, (path, spec) in enumerate(items)]
        lines.append("    }" + ("," if i < len(models) - 1 else ""))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _spec_str(spec: list) -> str:
    return "P(" + ", ".join(repr(tuple(a)) if isinstance(a, list) else repr(a) for a in spec) + ")"


def spec_diff(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """One line per difference: changed rules, and per model each changed, gone or new parameter."""
    lines = []
    if expected.get("rules") != actual["rules"]:
        lines.append(f"~ rules: {expected.get('rules')} -> {actual['rules']}")
    if expected.get("mesh") != actual["mesh"]:
        lines.append(f"~ mesh: {expected.get('mesh')} -> {actual['mesh']}")
    old_models, new_models = expected.get("models", {}), actual["models"]
    for name in sorted(old_models.keys() | new_models.keys()):
        old, new = old_models.get(name, {}), new_models.get(name, {})
        for path in sorted(old.keys() | new.keys()):
            if path not in new:
                lines.append(f"- {name} {path}: {_spec_str(old[path])} (parameter gone)")
            elif path not in old:
                lines.append(f"+ {name} {path}: {_spec_str(new[path])} (new parameter)")
            elif old[path] != new[path]:
                lines.append(f"~ {name} {path}: {_spec_str(old[path])} -> {_spec_str(new[path])}")
    return lines


def test_partition_specs_match_the_golden_table():
    actual = current_table()
    if os.environ.get(UPDATE_VAR) == "1":
        GOLDEN.write_text(dump(actual))
        pytest.skip(f"{UPDATE_VAR}=1: rewrote {GOLDEN}; review `git diff` before committing")
    assert GOLDEN.exists(), f"{GOLDEN} missing; create it with {UPDATE_VAR}=1"
    expected = json.loads(GOLDEN.read_text())
    diff = spec_diff(expected, actual)
    assert not diff, (
        f"{len(diff)} partition spec difference(s) from {GOLDEN.name} (- golden only, + new only, "
        "~ changed):\n  " + "\n  ".join(diff) + f"\nIf intended, rerun with {UPDATE_VAR}=1 and "
        "commit the regenerated file.")


def test_golden_file_is_in_the_canonical_layout():
    """The committed file is exactly what the update writes, so regenerating it gives a clean
    diff (no reordering noise) and the table stays one parameter per line."""
    assert GOLDEN.read_text() == dump(json.loads(GOLDEN.read_text()))


def test_a_rule_change_shows_up_as_a_per_parameter_diff():
    """What the golden test catches: mapping 'mlp' to None (MLP weights replicated) changes exactly
    the feed-forward kernels and biases of both models, each reported with its old and new spec."""
    expected = json.loads(GOLDEN.read_text())
    rules = tuple((name, None if name == "mlp" else axis) for name, axis in DEFAULT_RULES)
    diff = spec_diff(expected, current_table(rules))
    assert diff[0].startswith("~ rules:")
    changed = diff[1:]
    assert "~ bert_dual_encoder encoder/layer_0/wi/kernel: P(None, 'model') -> P(None, None)" in changed
    assert "~ t5_tiny encoder/layer_1/mlp/wo/kernel: P('model', None) -> P(None, None)" in changed
    assert all("/wi" in line or "/wo/" in line for line in changed), changed
    # BERT: 2 layers x (wi kernel, wi bias, wo kernel); T5: 2 + 2 layers x (wi_0, wi_1, wo kernel).
    assert len(changed) == 2 * 3 + 4 * 3, changed
