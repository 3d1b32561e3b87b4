"""Imports decoder-only LM weights into `DecoderLM`: Hugging Face safetensors (Gemma3TextModel /
Gemma3ForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM) and GGUF files (llama.cpp; the `gguf`
package reads and dequantizes them, no torch).

Both paths end in the one-to-one conversion of weight_import.py, so a wrong file is reported with
every missing, unexpected and mis-shaped tensor at once. GGUF tensors are first renamed to the HF
names and brought to the HF layout, undoing what llama.cpp's converter did:
  - Llama-architecture Q/K rows are permuted into interleaved RoPE pairs (per head, rows
    (j, j + D/2) become (2j, 2j + 1)); the inverse permutation restores rotate-half. Qwen2 and
    Gemma 3 are converted unpermuted.
  - Gemma norm weights are stored with the +1 of its (1 + weight) scale already added; 1 is
    subtracted (as transformers does).
  - GGUF lists shapes fastest-varying first (ggml order), the reverse of numpy's; the data come
    back from the reader in numpy order, [out, in] like a PyTorch Linear weight.
The config comes from the GGUF metadata (`<arch>.block_count`, ...); what GGUF does not store takes
llama.cpp's and transformers' values (Gemma 3: local RoPE base 10k, 5 local : 1 global, scores
scaled by head_dim**-0.5).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from irjax.errors import InputFileError, MissingFileError
from irjax.models.decoder_lm import DecoderConfig, DecoderLM
from irjax.models.t5_import import read_tensors
from irjax.models.weight_import import (CheckpointMismatchError, ParamPath, Transform,
                                        convert_tensors)
from irjax.models.weight_import import expected_shapes as weight_shapes

FAMILIES = ("gemma3", "llama", "qwen2")
# Checkpoint tensors the model has no use for, with the reason they may be dropped.
IGNORED = {
    r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq": "a RoPE buffer, recomputed at run time",
}


def _transpose(*out_shape: int) -> Transform:
    """Linear weight [out, in] -> kernel [in, *out_shape] (default [in, out])."""
    return lambda w: np.ascontiguousarray(w.T).reshape((w.shape[1],) + (out_shape or (w.shape[0],)))


def _transpose_in(*in_shape: int) -> Transform:
    """Linear weight [out, in] -> kernel [*in_shape, out] (in split into heads, head_dim)."""
    return lambda w: np.ascontiguousarray(w.T).reshape(in_shape + (w.shape[0],))


def _reshape(*shape: int) -> Transform:
    return lambda b: b.reshape(shape)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def family_of(config: DecoderConfig) -> str:
    """'gemma3' for the (1 + weight) sandwich-norm stack, else 'llama' (Qwen2 = Llama + biases)."""
    return "gemma3" if config.sandwich_norms else "llama"


def name_map(config: DecoderConfig) -> dict[str, tuple[ParamPath, Transform]]:
    """HF tensor name (without the 'model.' prefix) -> (Flax path, transform to the Flax layout)."""
    h, kv, d = config.num_heads, config.num_kv_heads, config.head_dim
    m: dict[str, tuple[ParamPath, Transform]] = {
        "embed_tokens.weight": (("embed", "embedding"), _identity),
        "norm.weight": (("final_norm", "scale"), _identity),
    }
    if not config.tie_word_embeddings:
        m["lm_head.weight"] = (("lm_head", "kernel"), _transpose())
    gemma = family_of(config) == "gemma3"
    norms = ({"input_layernorm": "pre_attention_norm", "post_attention_layernorm":
              "post_attention_norm", "pre_feedforward_layernorm": "pre_mlp_norm",
              "post_feedforward_layernorm": "post_mlp_norm"} if gemma else
             {"input_layernorm": "pre_attention_norm", "post_attention_layernorm": "pre_mlp_norm"})
    for i in range(config.num_layers):
        src, dst = f"layers.{i}.", f"layer_{i}"
        for hf, ours in norms.items():
            m[f"{src}{hf}.weight"] = ((dst, ours, "scale"), _identity)
        for hf, ours, heads in (("q", "query", h), ("k", "key", kv), ("v", "value", kv)):
            m[f"{src}self_attn.{hf}_proj.weight"] = ((dst, "attention", ours, "kernel"),
                                                     _transpose(heads, d))
            if config.attention_bias:
                m[f"{src}self_attn.{hf}_proj.bias"] = ((dst, "attention", ours, "bias"),
                                                       _reshape(heads, d))
        m[f"{src}self_attn.o_proj.weight"] = ((dst, "attention", "out", "kernel"),
                                              _transpose_in(h, d))
        if config.qk_norm:
            for hf, ours in (("q_norm", "query_norm"), ("k_norm", "key_norm")):
                m[f"{src}self_attn.{hf}.weight"] = ((dst, "attention", ours, "scale"), _identity)
        for proj in ("gate", "up", "down"):
            m[f"{src}mlp.{proj}_proj.weight"] = ((dst, "mlp", proj, "kernel"), _transpose())
    return m


def canonical_name(name: str) -> str:
    """Drops the wrappers' prefixes: 'model.' (…ForCausalLM) and 'language_model.'."""
    for prefix in ("language_model.", "model.", "language_model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def expected_shapes(config: DecoderConfig) -> dict[ParamPath, tuple[int, ...]]:
    """Flax parameter path -> shape of the model's parameters (abstract init)."""
    return weight_shapes(DecoderLM(config).init, jax.ShapeDtypeStruct((1, 4), jnp.int32))


def convert_state_dict(tensors: Mapping[str, np.ndarray], config: DecoderConfig, *,
                       model: str = "decoder LM", param_dtype: Any = np.float32,
                       canonical: Any = canonical_name) -> dict[str, Any]:
    """HF-named tensors -> nested Flax params (numpy), or CheckpointMismatchError. With tied
    embeddings an `lm_head.weight` copy is accepted only when equal to the embedding."""
    conflicts, heads = [], []
    if config.tie_word_embeddings:
        heads = [n for n in tensors if canonical(n) == "lm_head.weight"]
        embed_name = next((n for n in tensors if canonical(n) == "embed_tokens.weight"), None)
        for raw in heads:
            head = tensors[raw]
            embed = None if embed_name is None else tensors[embed_name]
            if embed is None or head.shape != embed.shape or not np.array_equal(head, embed):
                conflicts.append(raw)
    problems = {"an output matrix that differs from the tied embedding (is tie_word_embeddings "
                "right?)": conflicts}
    kept = _Without(tensors, set(heads)) if heads else tensors
    return convert_tensors(kept, name_map(config), expected_shapes(config), model=model,
                           ignored=IGNORED, canonical=canonical, param_dtype=param_dtype,
                           problems=problems)


class _Without(Mapping):
    """`tensors` less some names, read through (a lazy mapping stays lazy)."""

    def __init__(self, tensors: Mapping[str, Any], dropped: set[str]):
        self._tensors, self._dropped = tensors, dropped

    def __getitem__(self, name: str) -> Any:
        if name in self._dropped:
            raise KeyError(name)
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return (n for n in self._tensors if n not in self._dropped)

    def __len__(self) -> int:
        return sum(1 for _ in self)


# ----------------------------------------------------------------------------- Hugging Face


def _rope_settings(values: Mapping[str, Any], layer_type: str | None = None,
                   theta_key: str = "rope_theta") -> dict[str, Any]:
    """RoPE base and scaling of one layer type, from transformers 5's rope_parameters or the
    older keys (`theta_key`; rope_scaling, which Gemma 3 applies to global layers only)."""
    params = values.get("rope_parameters") or {}
    if layer_type:
        params = params.get(layer_type) or {}
    scaling = params if "rope_type" in params else {}
    if not scaling and layer_type in (None, "full_attention"):
        scaling = values.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    return {"theta": params.get("rope_theta", values.get(theta_key)), "kind": kind,
            "factor": float(scaling.get("factor", 1.0))}


def config_from_hf(values: Mapping[str, Any], where: str = "config.json") -> DecoderConfig:
    """A DecoderConfig from a Hugging Face config.json dict (gemma3_text, llama, qwen2)."""
    values = dict(values.get("text_config") or values)
    model_type = values.get("model_type", "")
    common = dict(vocab_size=values["vocab_size"], hidden_size=values["hidden_size"],
                  intermediate_size=values["intermediate_size"],
                  num_layers=values["num_hidden_layers"], num_heads=values["num_attention_heads"],
                  num_kv_heads=values.get("num_key_value_heads") or values["num_attention_heads"],
                  head_dim=values.get("head_dim") or
                  values["hidden_size"] // values["num_attention_heads"],
                  rms_norm_eps=values.get("rms_norm_eps", 1e-6),
                  max_position_embeddings=values.get("max_position_embeddings", 8192))
    if model_type in ("gemma3_text", "gemma3"):
        glob = _rope_settings(values, "full_attention")
        local = _rope_settings(values, "sliding_attention", "rope_local_base_freq")
        if glob["kind"] not in ("default", "linear") or local["kind"] != "default":
            raise ValueError(f"{where}: RoPE scaling {glob['kind']!r}/{local['kind']!r} is not "
                             "supported (only linear scaling of the global layers)")
        config = DecoderConfig.gemma3(
            **common, rope_theta=glob["theta"] or 1_000_000.0,
            rope_local_theta=local["theta"] or 10_000.0,
            rope_scaling_factor=glob["factor"], sliding_window=values.get("sliding_window", 512),
            sliding_window_pattern=values.get("sliding_window_pattern", 6),
            query_pre_attn_scalar=values.get("query_pre_attn_scalar", 256),
            attn_logit_softcap=values.get("attn_logit_softcapping"),
            final_logit_softcap=values.get("final_logit_softcapping"),
            tie_word_embeddings=values.get("tie_word_embeddings", True),
            causal=not values.get("use_bidirectional_attention", False))
        layer_types = values.get("layer_types")
        if layer_types and [t == "sliding_attention" for t in layer_types] != \
                [config.is_sliding(i) for i in range(config.num_layers)]:
            raise ValueError(f"{where}: layer_types {layer_types} is not the every-"
                             f"{config.sliding_window_pattern}th-global pattern this model uses")
        return config
    if model_type in ("llama", "qwen2"):
        rope = _rope_settings(values)
        if rope["kind"] not in ("default", "linear"):
            raise ValueError(f"{where}: rope_scaling type {rope['kind']!r} is not supported "
                             "(only unscaled or linear RoPE)")
        if values.get("mlp_bias") or (model_type == "qwen2" and values.get("use_sliding_window")):
            raise ValueError(f"{where}: mlp_bias / use_sliding_window are not supported")
        make = DecoderConfig.qwen2 if model_type == "qwen2" else DecoderConfig.llama
        return make(**common, rope_theta=rope["theta"] or 10_000.0,
                    rope_scaling_factor=rope["factor"],
                    attention_bias=model_type == "qwen2" or bool(values.get("attention_bias")),
                    tie_word_embeddings=values.get("tie_word_embeddings", False))
    raise ValueError(f"{where}: model_type {model_type!r} is not supported; expected gemma3_text, "
                     "llama or qwen2")


def load_hf(directory: str | os.PathLike, param_dtype: Any = np.float32,
            **overrides: Any) -> tuple[DecoderConfig, dict[str, Any]]:
    """(config, params) of a Hugging Face checkpoint directory (config.json + safetensors)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise MissingFileError(f"{config_path} does not exist; a Hugging Face checkpoint "
                               "directory holds config.json beside model.safetensors")
    config = config_from_hf(json.loads(config_path.read_text()), str(config_path))
    if overrides:
        config = dataclasses.replace(config, **overrides)
    tensors, path = read_tensors(directory)
    try:
        return config, convert_state_dict(tensors, config, model=family_of(config),
                                          param_dtype=param_dtype)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{path}: {err}") from None


# ----------------------------------------------------------------------------- GGUF

_GGUF_LAYER = {  # llama.cpp block tensor -> HF layer tensor (the norms differ per family below)
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GGUF_NORMS = {
    "gemma3": {"post_attention_norm": "post_attention_layernorm",
               "ffn_norm": "pre_feedforward_layernorm",
               "post_ffw_norm": "post_feedforward_layernorm"},
    "llama": {"ffn_norm": "post_attention_layernorm"},
    "qwen2": {"ffn_norm": "post_attention_layernorm"},
}
_GGUF_TOP = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight",
             "output.weight": "lm_head.weight"}


def gguf_to_hf_name(name: str, arch: str) -> str:
    """The HF name of a llama.cpp tensor name (unknown names come back unchanged)."""
    if name in _GGUF_TOP:
        return _GGUF_TOP[name]
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    if not match:
        return name
    block, base, kind = match.groups()
    hf = {**_GGUF_LAYER, **_GGUF_NORMS.get(arch, {})}.get(base)
    return f"layers.{block}.{hf}.{kind}" if hf else name


def unpermute_rope_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's Q/K permutation: per head, interleaved pairs back to halves."""
    dim = w.shape[0] // heads
    return w.reshape(heads, dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _window_pattern(value: Any, where: str) -> int:
    """llama.cpp's sliding_window_pattern: an int n (every n-th layer global) or one bool per
    layer (True: sliding), which must then follow an every-n-th pattern."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    flags = [bool(v) for v in value]
    n = flags.index(False) + 1 if False in flags else 0
    if flags != [bool(n == 0 or (i + 1) % n) for i in range(len(flags))]:
        raise ValueError(f"{where}: sliding_window_pattern {flags} is not every-n-th-global")
    return n


def config_from_gguf(reader: Any, where: str) -> DecoderConfig:
    """A DecoderConfig from GGUF metadata; `where` names the file in errors."""
    arch = _field(reader, "general.architecture")
    if arch not in FAMILIES:
        raise ValueError(f"{where}: general.architecture={arch!r}; supported: {FAMILIES}")

    def get(key: str, default: Any = KeyError) -> Any:
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            if default is KeyError:
                raise InputFileError(f"{where}: GGUF metadata has no {arch}.{key}; the file is "
                                     "incomplete or not a llama.cpp model export")
            return default
        return value

    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise ValueError(f"{where}: rope_freqs.weight holds Llama-3-style RoPE frequency factors, "
                         "which this model does not implement (only unscaled or linear RoPE)")
    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    embed = next(t for t in reader.tensors if t.name == "token_embd.weight") \
        if "token_embd.weight" in names else None
    vocab = get("vocab_size", None) or (int(embed.shape[1]) if embed is not None else None) \
        or len(_field(reader, "tokenizer.ggml.tokens", []))
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise ValueError(f"{where}: {arch}.rope.scaling.type={scaling!r} is not supported")
    common = dict(vocab_size=int(vocab), hidden_size=hidden,
                  intermediate_size=int(get("feed_forward_length")),
                  num_layers=int(get("block_count")), num_heads=heads,
                  num_kv_heads=int(get("attention.head_count_kv", heads)),
                  head_dim=int(get("attention.key_length", hidden // heads)),
                  rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
                  rope_scaling_factor=float(get("rope.scaling.factor", 1.0)),
                  max_position_embeddings=int(get("context_length", 8192)),
                  tie_word_embeddings="output.weight" not in names)
    if arch == "gemma3":
        return DecoderConfig.gemma3(**common, rope_theta=float(get("rope.freq_base", 1e6)),
                                    sliding_window=int(get("attention.sliding_window", 512)),
                                    sliding_window_pattern=_window_pattern(
                                        get("attention.sliding_window_pattern", 6), where),
                                    query_pre_attn_scalar=float(common["head_dim"]),
                                    final_logit_softcap=get("final_logit_softcapping", None),
                                    attn_logit_softcap=get("attn_logit_softcapping", None))
    make = DecoderConfig.qwen2 if arch == "qwen2" else DecoderConfig.llama
    return make(**common, rope_theta=float(get("rope.freq_base", 10_000.0)),
                attention_bias=arch == "qwen2" or "blk.0.attn_q.bias" in names)


class _LazyGGUF(Mapping):
    """The GGUF's tensors by name, each dequantized only when read and not kept: the import
    converts one tensor at a time, so at most one float32 tensor (plus its converted copy) exists
    beside the parameters built so far, instead of the whole model in float32 first."""

    def __init__(self, reader: Any, arch: str, config: DecoderConfig):
        self._tensors = {t.name: t for t in reader.tensors}
        self._arch, self._config = arch, config

    def __getitem__(self, name: str) -> np.ndarray:
        return _gguf_tensor(self._tensors[name], self._arch, self._config)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def _gguf_tensor(tensor: Any, arch: str, config: DecoderConfig) -> np.ndarray:
    """One tensor dequantized to float32, in numpy order and the HF layout."""
    from gguf import dequantize

    shape = tuple(int(d) for d in reversed(tensor.shape))
    value = np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)
    name = tensor.name
    if arch == "llama" and re.fullmatch(r"blk\.\d+\.attn_[qk]\.(weight|bias)", name):
        heads = config.num_heads if ".attn_q." in name else config.num_kv_heads
        value = unpermute_rope_rows(value, heads)
    if arch == "gemma3" and name.endswith("norm.weight"):
        value = value - np.float32(1.0)
    return value


def read_gguf(path: str | os.PathLike) -> tuple[Any, str]:
    """A GGUFReader of `path` (memory-mapped) and its architecture."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"GGUF file {path} does not exist")
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as err:  # the reader raises ValueError / struct errors on a bad header
        raise InputFileError(f"cannot read {path} as GGUF ({err}); the file is truncated or not "
                             "a GGUF file: fetch it again") from err
    return reader, _field(reader, "general.architecture")


def load_gguf(path: str | os.PathLike, param_dtype: Any = np.float32,
              **overrides: Any) -> tuple[DecoderConfig, dict[str, Any]]:
    """(config, params) of a llama.cpp GGUF file, dequantized to `param_dtype` (float32 or
    jnp.bfloat16). `overrides` replace config fields (e.g. dtype)."""
    reader, arch = read_gguf(path)
    config = config_from_gguf(reader, str(path))
    if overrides:
        config = dataclasses.replace(config, **overrides)
    tensors = _LazyGGUF(reader, arch, config)
    try:
        return config, convert_state_dict(tensors, config, model=f"{arch} (GGUF)",
                                          param_dtype=param_dtype,
                                          canonical=lambda n: gguf_to_hf_name(n, arch))
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{path}: {err}") from None


def to_device(params: dict[str, Any]) -> dict[str, Any]:
    """The numpy parameter tree as jax arrays, moved leaf by leaf and each numpy leaf released
    as soon as it is copied, so the model is not held twice. (Numpy parameters would also be
    copied to the device again at every jitted call.) `params` is emptied."""
    out: dict[str, Any] = {}
    for key in list(params):
        value = params.pop(key)
        out[key] = to_device(value) if isinstance(value, dict) else jnp.asarray(value)
        del value
    return out


def load_lm(path: str | os.PathLike, param_dtype: Any = np.float32,
            **overrides: Any) -> tuple[DecoderConfig, dict[str, Any]]:
    """A .gguf file, or a Hugging Face checkpoint directory ('~' expanded)."""
    path = Path(path).expanduser()
    if path.suffix == ".gguf":
        return load_gguf(path, param_dtype, **overrides)
    return load_hf(path, param_dtype, **overrides)
