"""Imports Hugging Face BERT/MiniLM safetensors into `BertEncoder`'s parameter tree (no torch).

Each checkpoint tensor is mapped to one Flax parameter by name, PyTorch `Linear` weights are
transposed (and reshaped to the encoder's [embed, heads, kv] layouts), and the import refuses to
return anything partial: every checkpoint tensor must be used (or be on a short, explicit list of
tensors the encoder has no use for) and every Flax parameter must be filled with a matching shape.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
from flax import traverse_util

from irjax.errors import InputFileError, MissingFileError, UserError
from irjax.models.bert import BertConfig, BertEncoder

# Checkpoint tensors with no counterpart in the encoder, with the reason they may be dropped.
IGNORED = {
    r"embeddings\.position_ids": "a constant index buffer, recomputed at run time",
    r"pooler\.dense\.(weight|bias)": "the [CLS] pooler; sentence embeddings use mean pooling",
    r"cls\..*": "pretraining heads (masked LM / next sentence), unused by an encoder",
}

Transform = Callable[[np.ndarray], np.ndarray]


class CheckpointMismatchError(ValueError, UserError):
    """The checkpoint and the encoder's parameters do not correspond one to one."""


def _linear(*out_shape: int) -> Transform:
    """PyTorch Linear weight [out, in] -> kernel [in, *out_shape] (default: [in, out])."""
    return lambda w: np.ascontiguousarray(w.T).reshape((w.shape[1],) + (out_shape or (w.shape[0],)))


def _linear_in(*in_shape: int) -> Transform:
    """PyTorch Linear weight [out, in] -> kernel [*in_shape, out] (in split into heads, kv)."""
    return lambda w: np.ascontiguousarray(w.T).reshape(in_shape + (w.shape[0],))


def _reshape(*shape: int) -> Transform:
    return lambda b: b.reshape(shape)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def name_map(config: BertConfig) -> dict[str, tuple[tuple[str, ...], Transform]]:
    """Unprefixed HF tensor name -> (Flax parameter path, transform to the Flax layout)."""
    h, d = config.num_attention_heads, config.head_dim
    m: dict[str, tuple[tuple[str, ...], Transform]] = {}
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        m[f"embeddings.{name}.weight"] = (("embeddings", name, "embedding"), _identity)
    m["embeddings.LayerNorm.weight"] = (("embeddings", "layer_norm", "scale"), _identity)
    m["embeddings.LayerNorm.bias"] = (("embeddings", "layer_norm", "bias"), _identity)
    for i in range(config.num_hidden_layers):
        src, dst = f"encoder.layer.{i}.", f"layer_{i}"
        for proj in ("query", "key", "value"):
            m[f"{src}attention.self.{proj}.weight"] = ((dst, "attention", proj, "kernel"), _linear(h, d))
            m[f"{src}attention.self.{proj}.bias"] = ((dst, "attention", proj, "bias"), _reshape(h, d))
        m[f"{src}attention.output.dense.weight"] = ((dst, "attention", "out", "kernel"), _linear_in(h, d))
        m[f"{src}attention.output.dense.bias"] = ((dst, "attention", "out", "bias"), _identity)
        m[f"{src}attention.output.LayerNorm.weight"] = ((dst, "attention_norm", "scale"), _identity)
        m[f"{src}attention.output.LayerNorm.bias"] = ((dst, "attention_norm", "bias"), _identity)
        m[f"{src}intermediate.dense.weight"] = ((dst, "wi", "kernel"), _linear())
        m[f"{src}intermediate.dense.bias"] = ((dst, "wi", "bias"), _identity)
        m[f"{src}output.dense.weight"] = ((dst, "wo", "kernel"), _linear())
        m[f"{src}output.dense.bias"] = ((dst, "wo", "bias"), _identity)
        m[f"{src}output.LayerNorm.weight"] = ((dst, "output_norm", "scale"), _identity)
        m[f"{src}output.LayerNorm.bias"] = ((dst, "output_norm", "bias"), _identity)
    return m


def canonical_name(name: str) -> str:
    """Strips a 'bert.' prefix and renames old TF-style LayerNorm 'gamma'/'beta'."""
    if name.startswith("bert."):
        name = name[len("bert."):]
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))


def expected_shapes(config: BertConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flax parameter path -> shape, from an abstract init (no memory, no compute)."""
    module = BertEncoder(config)
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    abstract = jax.eval_shape(lambda i: module.init(jax.random.PRNGKey(0), i, i), ids)
    # Unwrap the logical-axis boxes by hand: nn.unbox would add sharding constraints, which fail
    # on abstract values when called inside a mesh context (as the trainer does when importing).
    params = jax.tree.map(lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x,
                          abstract["params"], is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(params).items()}


def convert_state_dict(
    tensors: Mapping[str, np.ndarray],
    config: BertConfig,
    param_dtype: Any = np.float32,
) -> dict[str, Any]:
    """Maps HF tensors to a nested Flax params dict (numpy), or raises CheckpointMismatchError."""
    mapping = name_map(config)
    expected = expected_shapes(config)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    unexpected, mismatched, ignored = [], [], []
    for raw_name, tensor in tensors.items():
        name = canonical_name(raw_name)
        if name not in mapping:
            (ignored if any(re.fullmatch(p, name) for p in IGNORED) else unexpected).append(raw_name)
            continue
        path, transform = mapping[name]
        value = transform(np.asarray(tensor))
        if tuple(value.shape) != expected[path]:
            mismatched.append(
                f"{raw_name} {tuple(tensor.shape)} -> {'/'.join(path)} {tuple(value.shape)}, "
                f"expected {expected[path]}"
            )
            continue
        if path in flat:
            unexpected.append(f"{raw_name} (duplicate of an earlier tensor for {'/'.join(path)})")
            continue
        flat[path] = value.astype(param_dtype)
    missing = sorted("/".join(p) for p in expected if p not in flat)
    if unexpected or mismatched or missing:
        lines = ["checkpoint does not match the BERT encoder config:"]
        if missing:
            lines.append(f"  missing (Flax params not in the checkpoint): {missing}")
        if unexpected:
            lines.append(f"  unexpected (checkpoint tensors with no Flax param): {sorted(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches: {mismatched}")
        lines.append("check that config.json belongs to these weights and that it is a BERT model")
        raise CheckpointMismatchError("\n".join(lines))
    return traverse_util.unflatten_dict(flat)


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
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


def load_bert_params(
    weights: str | os.PathLike,
    config: BertConfig,
    param_dtype: Any = np.float32,
) -> dict[str, Any]:
    """Reads a model.safetensors file (or the one inside a checkpoint directory)."""
    weights = Path(weights)
    if weights.is_dir():
        weights = weights / "model.safetensors"
    try:
        return convert_state_dict(load_safetensors(weights), config, param_dtype)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{weights}: {err}") from None
