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
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.weight_import import (CheckpointMismatchError, ParamPath, Transform,
                                        convert_tensors, load_safetensors)
from irjax.models.weight_import import expected_shapes as weight_shapes

# Checkpoint tensors with no counterpart in the encoder, with the reason they may be dropped.
IGNORED = {
    r"embeddings\.position_ids": "a constant index buffer, recomputed at run time",
    r"pooler\.dense\.(weight|bias)": "the [CLS] pooler; sentence embeddings use mean pooling",
    r"cls\..*": "pretraining heads (masked LM / next sentence), unused by an encoder",
}

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


def name_map(config: BertConfig) -> dict[str, tuple[ParamPath, Transform]]:
    """Unprefixed HF tensor name -> (Flax parameter path, transform to the Flax layout)."""
    h, d = config.num_attention_heads, config.head_dim
    m: dict[str, tuple[ParamPath, Transform]] = {}
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


def expected_shapes(config: BertConfig) -> dict[ParamPath, tuple[int, ...]]:
    """Flax parameter path -> shape of the encoder's parameters (abstract init)."""
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return weight_shapes(BertEncoder(config).init, ids, ids)


def convert_state_dict(
    tensors: Mapping[str, np.ndarray],
    config: BertConfig,
    param_dtype: Any = np.float32,
) -> dict[str, Any]:
    """Maps HF tensors to a nested Flax params dict (numpy), or raises CheckpointMismatchError."""
    return convert_tensors(tensors, name_map(config), expected_shapes(config), model="BERT",
                           ignored=IGNORED, canonical=canonical_name, param_dtype=param_dtype)


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
