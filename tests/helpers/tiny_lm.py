"""Tiny random decoder-LM checkpoints in Hugging Face layout, their GGUF exports written the way
llama.cpp's converter writes them, and a float64 numpy forward pass straight from the HF
modelling code's equations (the reference irjax's DecoderLM is tested against).

Nothing here imports irjax.models.lm_import: the name tables and layout changes below are
restated from the converter's conventions, so a mistake in the importer cannot cancel out.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# HF config.json dicts of the tiny models (Q8_0 needs every row length to be a multiple of 32).
GEMMA3 = dict(model_type="gemma3_text", vocab_size=96, hidden_size=64, intermediate_size=96,
              num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
              sliding_window=3, sliding_window_pattern=3, query_pre_attn_scalar=16,
              max_position_embeddings=64)
LLAMA = dict(model_type="llama", vocab_size=96, hidden_size=64, intermediate_size=96,
             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             rms_norm_eps=1e-5, rope_theta=10_000.0, tie_word_embeddings=False,
             max_position_embeddings=64)
QWEN2 = dict(LLAMA, model_type="qwen2", rope_theta=1_000_000.0, tie_word_embeddings=True)


def head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def is_gemma(cfg: dict) -> bool:
    return cfg["model_type"].startswith("gemma3")


def random_checkpoint(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 tensors with HF's names and [out, in] Linear layouts."""
    rng = np.random.default_rng(seed)
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    h, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
    w = lambda *shape, s=0.15: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
    t = {"model.embed_tokens.weight": w(v, d, s=0.5), "model.norm.weight": w(d, s=0.3) + 1}
    if not cfg.get("tie_word_embeddings", is_gemma(cfg)):
        t["lm_head.weight"] = w(v, d)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = w(h * hd, d)
        t[p + "self_attn.k_proj.weight"] = w(kv * hd, d)
        t[p + "self_attn.v_proj.weight"] = w(kv * hd, d)
        t[p + "self_attn.o_proj.weight"] = w(d, h * hd)
        t[p + "mlp.gate_proj.weight"] = w(f, d)
        t[p + "mlp.up_proj.weight"] = w(f, d)
        t[p + "mlp.down_proj.weight"] = w(d, f)
        norms = (["input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"] if is_gemma(cfg)
                 else ["input_layernorm", "post_attention_layernorm"])
        for norm in norms:  # Gemma stores weight - 1 around 0, Llama the scale around 1
            t[p + norm + ".weight"] = w(d, s=0.3) + (0 if is_gemma(cfg) else 1)
        if is_gemma(cfg):
            t[p + "self_attn.q_norm.weight"] = w(hd, s=0.3)
            t[p + "self_attn.k_norm.weight"] = w(hd, s=0.3)
        if cfg["model_type"] == "qwen2":
            for name, rows in (("q", h), ("k", kv), ("v", kv)):
                t[p + f"self_attn.{name}_proj.bias"] = w(rows * hd, s=0.3)
    return t


# ------------------------------------------------------------------ the numpy reference

def _rms(x: np.ndarray, weight: np.ndarray, eps: float, gemma: bool) -> np.ndarray:
    x = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * ((1.0 + weight) if gemma else weight)


def _rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """x [T, heads, D], rotate-half as HF's apply_rotary_pos_emb."""
    dim = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, dim, 2) / dim)
    angles = positions[:, None] * inv[None]
    angles = np.concatenate([angles, angles], -1)[:, None, :]
    rotated = np.concatenate([-x[..., dim // 2:], x[..., :dim // 2]], -1)
    return x * np.cos(angles) + rotated * np.sin(angles)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def reference_logits(cfg: dict, t: dict[str, np.ndarray], ids: np.ndarray,
                     causal: bool = True) -> np.ndarray:
    """float64 logits [T, vocab] of one unpadded sequence `ids` [T]."""
    x = reference_hidden(cfg, t, ids, causal)
    return x @ t.get("lm_head.weight", t["model.embed_tokens.weight"]).astype(np.float64).T


def reference_hidden(cfg: dict, t: dict[str, np.ndarray], ids: np.ndarray,
                     causal: bool = True, attentions: list | None = None) -> np.ndarray:
    """float64 final (normed) hidden states [T, hidden] of one unpadded sequence `ids` [T].
    `attentions`, when given, receives each layer's softmax probabilities [heads, T, T]."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    gemma, eps = is_gemma(cfg), cfg["rms_norm_eps"]
    h, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
    length = len(ids)
    pos = np.arange(length, dtype=np.float64)
    x = t["model.embed_tokens.weight"][ids]
    if gemma:
        x = x * math.sqrt(cfg["hidden_size"])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sliding = gemma and (i + 1) % cfg["sliding_window_pattern"] != 0
        theta = cfg["rope_local_base_freq"] if sliding else cfg["rope_theta"]
        a = _rms(x, t[p + "input_layernorm.weight"], eps, gemma)
        def proj(n: str, heads: int) -> np.ndarray:
            y = a @ t[p + f"self_attn.{n}_proj.weight"].T + t.get(p + f"self_attn.{n}_proj.bias", 0)
            return y.reshape(length, heads, hd)

        q, k, v = proj("q", h), proj("k", kv), proj("v", kv)
        if gemma:
            q = _rms(q, t[p + "self_attn.q_norm.weight"], eps, True)
            k = _rms(k, t[p + "self_attn.k_norm.weight"], eps, True)
        q, k = _rope(q, pos, theta), _rope(k, pos, theta)
        scale = (cfg["query_pre_attn_scalar"] if gemma else hd) ** -0.5
        diff = pos[:, None] - pos[None, :]
        if causal:
            allowed = diff >= 0
            if sliding:
                allowed &= diff < cfg["sliding_window"]
        else:
            allowed = np.abs(diff) <= (cfg["sliding_window"] // 2 if sliding else length)
        heads, layer_probs = [], []
        for head in range(h):
            group = head // (h // kv)
            scores = np.where(allowed, q[:, head] @ k[:, group].T * scale, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs = probs / probs.sum(-1, keepdims=True)
            layer_probs.append(probs)
            heads.append(probs @ v[:, group])
        if attentions is not None:
            attentions.append(np.stack(layer_probs))
        attn = np.concatenate(heads, -1) @ t[p + "self_attn.o_proj.weight"].T
        if gemma:
            attn = _rms(attn, t[p + "post_attention_layernorm.weight"], eps, True)
        x = x + attn
        pre = "pre_feedforward_layernorm" if gemma else "post_attention_layernorm"
        m = _rms(x, t[p + pre + ".weight"], eps, gemma)
        gate = m @ t[p + "mlp.gate_proj.weight"].T
        act = _gelu_tanh(gate) if gemma else gate / (1 + np.exp(-gate))
        m = (act * (m @ t[p + "mlp.up_proj.weight"].T)) @ t[p + "mlp.down_proj.weight"].T
        if gemma:
            m = _rms(m, t[p + "post_feedforward_layernorm.weight"], eps, True)
        x = x + m
    return _rms(x, t["model.norm.weight"], eps, gemma)


# ------------------------------------------------------------------ GGUF as llama.cpp writes it

_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
_NORM_NAMES = {
    "gemma3": {"post_attention_layernorm": "post_attention_norm",
               "pre_feedforward_layernorm": "ffn_norm",
               "post_feedforward_layernorm": "post_ffw_norm"},
    "llama": {"post_attention_layernorm": "ffn_norm"},
}


def _llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows -> interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2) \
        .reshape(w.shape)


def gguf_tensors(cfg: dict, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint renamed and transformed as llama.cpp's converter does."""
    arch = "gemma3" if is_gemma(cfg) else cfg["model_type"]
    names = {**_LAYER_NAMES, **_NORM_NAMES["gemma3" if arch == "gemma3" else "llama"]}
    out = {}
    for name, value in t.items():
        if name == "model.embed_tokens.weight":
            new = "token_embd.weight"
        elif name == "model.norm.weight":
            new = "output_norm.weight"
        elif name == "lm_head.weight":
            new = "output.weight"
        else:
            _, _, block, rest = name.split(".", 3)
            base, kind = rest.rsplit(".", 1)
            new = f"blk.{block}.{names[base]}.{kind}"
        if arch == "llama" and (".attn_q." in new or ".attn_k." in new):
            value = _llama_cpp_permute(value, cfg["num_attention_heads"] if ".attn_q." in new
                                       else cfg["num_key_value_heads"])
        if arch == "gemma3" and new.endswith("norm.weight"):
            value = value + np.float32(1.0)
        out[new] = value
    return out


def write_gguf(path: Path, cfg: dict, t: dict[str, np.ndarray], quant: str = "F32") -> None:
    """A GGUF file of the checkpoint; 2-D weights (not norms) quantized to `quant` (F32, Q8_0)."""
    import gguf

    arch = "gemma3" if is_gemma(cfg) else cfg["model_type"]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_key_length(head_dim(cfg))
    writer.add_value_length(head_dim(cfg))
    writer.add_rope_freq_base(cfg["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_vocab_size(cfg["vocab_size"])
    if arch == "gemma3":
        writer.add_sliding_window(cfg["sliding_window"])
        writer.add_sliding_window_pattern(cfg["sliding_window_pattern"])
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    for name, value in gguf_tensors(cfg, t).items():
        if qtype == gguf.GGMLQuantizationType.F32 or value.ndim < 2:
            writer.add_tensor(name, value.astype(np.float32))
        else:
            writer.add_tensor(name, gguf.quantize(value, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
