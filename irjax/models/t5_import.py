"""Imports Hugging Face T5.1.1 checkpoints (T5ForConditionalGeneration safetensors) into `T5`.

The gated-GELU ('v1_1') layout: per block, SelfAttention q/k/v/o and layer_norm, in the decoder
also EncDecAttention, then DenseReluDense wi_0/wi_1/wo; the relative attention bias lives in
block 0 of each stack. PyTorch `Linear` weights [out, in] are transposed and split into the
[embed, heads, kv] / [heads, kv, embed] kernels of `irjax.models.t5`. As `hf_import` does for
BERT, nothing partial is returned: every Flax parameter must be filled with the right shape and
every checkpoint tensor used, or be one of a few known redundant copies; errors name the tensors
and the file. Sharded checkpoints (model.safetensors.index.json) are read shard by shard.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from irjax.errors import MissingFileError
from irjax.models.weight_import import (CheckpointMismatchError, ParamPath, Transform,
                                        convert_tensors, load_safetensors)
from irjax.models.weight_import import expected_shapes as weight_shapes
from irjax.models.t5 import T5, T5Config


# Checkpoint tensors the model has no use for, with the reason they may be dropped.
IGNORED = {
    r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight":
        "cross-attention has no position bias; HF ignores this tensor too",
}
# Copies of shared.weight that some exports keep; accepted only if equal to it.
EMBEDDING_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _transpose(*out_shape: int) -> Transform:
    """Linear weight [out, in] -> kernel [in, *out_shape] (default [in, out])."""
    return lambda w: np.ascontiguousarray(w.T).reshape((w.shape[1],) + (out_shape or (w.shape[0],)))


def _transpose_in(*in_shape: int) -> Transform:
    """Linear weight [out, in] -> kernel [*in_shape, out] (in split into heads, kv)."""
    return lambda w: np.ascontiguousarray(w.T).reshape(in_shape + (w.shape[0],))


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def name_map(config: T5Config) -> dict[str, tuple[ParamPath, Transform]]:
    """HF tensor name -> (Flax parameter path, transform to the Flax layout)."""
    h, k = config.num_heads, config.d_kv
    m: dict[str, tuple[ParamPath, Transform]] = {"shared.weight": (("shared", "embedding"), _identity)}
    if not config.tie_word_embeddings:
        m["lm_head.weight"] = (("lm_head", "kernel"), _transpose())

    def attention(src: str, dst: ParamPath) -> None:
        for hf, ours in (("q", "query"), ("k", "key"), ("v", "value")):
            m[f"{src}.{hf}.weight"] = (dst + (ours, "kernel"), _transpose(h, k))
        m[f"{src}.o.weight"] = (dst + ("out", "kernel"), _transpose_in(h, k))

    def mlp(src: str, dst: ParamPath) -> None:
        for name in ("wi_0", "wi_1", "wo"):
            m[f"{src}.DenseReluDense.{name}.weight"] = (dst + ("mlp", name, "kernel"), _transpose())
        m[f"{src}.layer_norm.weight"] = (dst + ("pre_mlp_norm", "scale"), _identity)

    for stack, layers in (("encoder", config.num_layers), ("decoder", config.num_decoder_layers)):
        m[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
            (stack, "relpos_bias", "embedding"), _identity)
        m[f"{stack}.final_layer_norm.weight"] = ((stack, "final_norm", "scale"), _identity)
        for i in range(layers):
            src, dst = f"{stack}.block.{i}.layer", (stack, f"layer_{i}")
            if stack == "encoder":
                attention(f"{src}.0.SelfAttention", dst + ("attention",))
                m[f"{src}.0.layer_norm.weight"] = (dst + ("pre_attention_norm", "scale"), _identity)
                mlp(f"{src}.1", dst)
            else:
                attention(f"{src}.0.SelfAttention", dst + ("self_attention",))
                m[f"{src}.0.layer_norm.weight"] = (dst + ("pre_self_attention_norm", "scale"),
                                                   _identity)
                attention(f"{src}.1.EncDecAttention", dst + ("cross_attention",))
                m[f"{src}.1.layer_norm.weight"] = (dst + ("pre_cross_attention_norm", "scale"),
                                                   _identity)
                mlp(f"{src}.2", dst)
    return m


def expected_shapes(config: T5Config) -> dict[ParamPath, tuple[int, ...]]:
    """Flax parameter path -> shape of the model's parameters (abstract init)."""
    ids = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    return weight_shapes(T5(config).init, ids, ids, ids)


def _with_shared(tensors: Mapping[str, np.ndarray], config: T5Config) -> tuple[dict, list[str]]:
    """Resolves the tied copies of the embedding: shared.weight from whichever copy exists,
    redundant copies checked for equality (a differing copy means a different model)."""
    tensors = dict(tensors)
    conflicts = []
    copies = list(EMBEDDING_COPIES) + (["lm_head.weight"] if config.tie_word_embeddings else [])
    if "shared.weight" not in tensors:
        for name in EMBEDDING_COPIES:
            if name in tensors:
                tensors["shared.weight"] = tensors[name]
                break
    for name in copies:
        if name in tensors and "shared.weight" in tensors:
            copy = tensors.pop(name)
            if copy.shape != tensors["shared.weight"].shape or not np.array_equal(
                    copy, tensors["shared.weight"]):
                conflicts.append(name)
    return tensors, conflicts


def convert_state_dict(tensors: Mapping[str, np.ndarray], config: T5Config,
                       param_dtype: Any = np.float32) -> dict[str, Any]:
    """Maps HF tensors to a nested Flax params dict (numpy), or raises CheckpointMismatchError."""
    tensors, conflicts = _with_shared(tensors, config)
    hints = []
    if any(".DenseReluDense.wi.weight" in name for name in tensors):
        hints.append("DenseReluDense.wi is original T5 (relu); only T5.1.1 gated-gelu "
                     "checkpoints are supported")
    problems = {"tied copies that differ from shared.weight (is tie_word_embeddings right?)":
                conflicts}
    return convert_tensors(tensors, name_map(config), expected_shapes(config), model="T5",
                           ignored=IGNORED, param_dtype=param_dtype, problems=problems,
                           hints=hints)


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], Path]:
    """All tensors of model.safetensors, or of the shards its .index.json lists; a directory
    means the checkpoint inside it. Returns the tensors and the file they were read from."""
    path = Path(path)
    if path.is_dir():
        single, index = path / "model.safetensors", path / "model.safetensors.index.json"
        path = index if index.exists() and not single.exists() else single
    if path.name.endswith(".index.json"):
        if not path.exists():
            raise MissingFileError(f"weights index {path} does not exist")
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors.update(load_safetensors(path.parent / shard))
        return tensors, path
    return load_safetensors(path), path


def load_t5_params(weights: str | os.PathLike, config: T5Config,
                   param_dtype: Any = np.float32) -> dict[str, Any]:
    """T5 params (numpy, unboxed) from a safetensors file, index or checkpoint directory."""
    tensors, path = read_tensors(weights)
    try:
        return convert_state_dict(tensors, config, param_dtype)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{path}: {err}") from None


def load_t5(directory: str | os.PathLike, **config_overrides: Any
            ) -> tuple[T5Config, dict[str, Any]]:
    """(config, params) of a Hugging Face T5.1.1 checkpoint directory (config.json + weights)."""
    config = T5Config.from_hf_json(directory, **config_overrides)
    return config, load_t5_params(directory, config)
