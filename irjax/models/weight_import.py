"""What every checkpoint import shares: reading safetensors, the parameter shapes a model expects,
and one conversion that refuses to return anything partial.

An importer (BERT in hf_import.py, T5 in t5_import.py) supplies a name map — checkpoint tensor
name -> (Flax parameter path, transform into the Flax layout) — and the patterns of tensors the
model has no use for. `convert_tensors` then requires a one-to-one match: every tensor used or
ignored on purpose, every parameter filled with the right shape; otherwise one report lists
every missing, unexpected and mis-shaped tensor at once.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from irjax.errors import InputFileError, MissingFileError, UserError

ParamPath = tuple[str, ...]
Transform = Callable[[np.ndarray], np.ndarray]
NameMap = Mapping[str, tuple[ParamPath, Transform]]


class CheckpointMismatchError(ValueError, UserError):
    """The checkpoint and the model's parameters do not correspond one to one."""


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as numpy arrays (no torch)."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError for corrupt headers
        raise InputFileError(
            f"cannot read {path} as safetensors ({err}); the file is truncated or not a "
            "safetensors file: reinstall or re-export the checkpoint"
        ) from err


def expected_shapes(init: Callable[..., Any], *example: Any) -> dict[ParamPath, tuple[int, ...]]:
    """Flax parameter path -> shape of `init(key, *example)["params"]`, from an abstract init (no
    memory, no compute). Unboxed by hand: nn.unbox would add sharding constraints, which fail on
    abstract values inside a mesh context (as when the trainer imports weights)."""
    abstract = jax.eval_shape(lambda *args: init(jax.random.key(0), *args), *example)
    params = jax.tree.map(lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x,
                          abstract["params"], is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(params).items()}


def convert_tensors(tensors: Mapping[str, np.ndarray], mapping: NameMap,
                    expected: Mapping[ParamPath, tuple[int, ...]], *, model: str,
                    ignored: Iterable[str] = (), canonical: Callable[[str], str] | None = None,
                    param_dtype: Any = np.float32,
                    problems: Mapping[str, list[str]] | None = None,
                    hints: Iterable[str] = ()) -> dict[str, Any]:
    """The nested Flax params (numpy) of `tensors`, or CheckpointMismatchError listing every
    problem. `canonical` renames a tensor before the lookup (e.g. drops a 'bert.' prefix);
    `ignored` are full-match patterns of tensors dropped on purpose; `problems` are sections the
    importer found itself (e.g. tied copies that differ); `hints` end the report."""
    flat: dict[ParamPath, np.ndarray] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    ignored = tuple(ignored)
    for raw_name, tensor in tensors.items():
        name = canonical(raw_name) if canonical else raw_name
        if name not in mapping:
            if not any(re.fullmatch(pattern, name) for pattern in ignored):
                unexpected.append(raw_name)
            continue
        path, transform = mapping[name]
        tensor = np.asarray(tensor)
        try:
            value = transform(tensor)
        except ValueError:  # a reshape (e.g. into heads x kv) that cannot fit: a shape mismatch
            value = tensor
        if tuple(value.shape) != expected[path]:
            mismatched.append(f"{raw_name} {tuple(tensor.shape)} -> {'/'.join(path)} "
                              f"{tuple(value.shape)}, expected {expected[path]}")
            continue
        if path in flat:
            unexpected.append(f"{raw_name} (duplicate of an earlier tensor for {'/'.join(path)})")
            continue
        # a transform that copied already gives an array nobody else holds: no second copy
        flat[path] = value.astype(param_dtype, copy=bool(np.may_share_memory(value, tensor)))
    sources = {path: name for name, (path, _) in mapping.items()}
    missing = sorted(f"{sources[p]} (-> {'/'.join(p)})" if p in sources else "/".join(p)
                     for p in expected if p not in flat)
    sections = {"missing (parameters not in the checkpoint)": missing,
                "unexpected (checkpoint tensors with no parameter)": sorted(unexpected),
                "shape mismatches": mismatched, **(problems or {})}
    if any(sections.values()):
        lines = [f"checkpoint does not match the {model} config:"]
        lines += [f"  {title}: {items}" for title, items in sections.items() if items]
        lines += [f"  {hint}" for hint in hints]
        lines.append(f"check that config.json belongs to these weights and that it is a {model} "
                     "model")
        raise CheckpointMismatchError("\n".join(lines))
    return traverse_util.unflatten_dict(flat)
