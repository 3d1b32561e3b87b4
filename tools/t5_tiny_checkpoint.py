"""The tiny random T5 checkpoints of the import parity test, regenerated from a seed instead of
being committed: tensor names and shapes (as transformers saves them) are stored in
tests/fixtures/t5_tiny/reference.npz with the model's outputs, and every tensor's values come from
a numpy generator seeded by (variant seed, tensor name). tools/make_t5_reference.py loads these
values into transformers' model to record its outputs; the tests write the same tensors with
`write_checkpoint` and import them with irjax. Pure numpy + safetensors: runs in either venv.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np


def tensor_values(seed: int, name: str, shape: Sequence[int]) -> np.ndarray:
    """Deterministic float32 values: RMSNorm scales near 1 (so a missed one shows), embeddings and
    relative-position tables at unit scale, projections at fan_in**-0.5."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    x = rng.standard_normal(tuple(shape))
    if name.endswith("layer_norm.weight"):
        x = 1.0 + 0.1 * x
    elif not (name == "shared.weight" or "relative_attention_bias" in name):
        x = x * float(shape[-1]) ** -0.5
    return x.astype(np.float32)


def checkpoint_tensors(seed: int, names: Sequence[str],
                       shapes: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    return {n: tensor_values(seed, n, s) for n, s in zip(names, shapes)}


def write_checkpoint(directory: Path, config: dict, seed: int, names: Sequence[str],
                     shapes: Sequence[Sequence[int]]) -> Path:
    """model.safetensors + config.json in `directory`, as a Hub T5.1.1 checkpoint has them."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint_tensors(seed, names, shapes), str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory
