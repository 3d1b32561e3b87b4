"""A T5.1.1-style encoder-decoder in Flax linen, the backbone of generative retrieval (DSI).

Pre-norm blocks with RMSNorm (no bias, no mean subtraction), a gated-GELU feed-forward (wi_0,
wi_1, wo; tanh GELU as HF's 'gelu_new'), no biases anywhere, and relative position buckets instead
of absolute positions: bidirectional in the encoder, causal in the decoder, one bias table per
stack computed once and shared by all of its layers (T5 keeps it in the first layer). Attention
scores are *not* divided by sqrt(d_kv): T5 folds that factor into the query initialisation, and
pretrained checkpoints rely on it.

Parameters and large activations carry the logical axis names 'vocab', 'embed', 'mlp', 'heads',
'kv', 'batch', 'length' (see irjax/parallel/partitioning.py); `irjax.models.t5_import` fills this
tree from Hugging Face checkpoints. `decode` recomputes the whole (short, padded) prefix, a pure
function of fixed-shape arrays (enough for DSI's few docid tokens); `init_decode_cache` and
`decode_step` decode one position per step instead, caching every layer's self-attention keys and
values and projecting the encoder output for cross-attention once (query generation, ~32 tokens).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from irjax.choices import check_choice
from irjax.models.efficiency import ATTENTION, REMAT, remat_policy

PAD_ID, EOS_ID, DECODER_START_ID = 0, 1, 0  # T5's SentencePiece vocabulary
_MASKED = -1e10  # replaces masked attention scores; finite, so fully padded rows give no NaN


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture of a T5.1.1 model; field names follow Hugging Face's config.json.

    Defaults are T5.1.1-small. `dtype` is the compute dtype (parameters stay float32).
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_decoder_layers: int | None = None  # None: as many as the encoder
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    tie_word_embeddings: bool = False  # T5.1.1 unties; tied logits are scaled by d_model**-0.5
    dtype: Any = "float32"
    # How it runs, not what it computes (irjax/models/efficiency.py): the attention path (fused
    # paths drop attention-probability dropout) and per-layer rematerialisation in training.
    attention: str = "einsum"
    remat: str = "none"

    def __post_init__(self) -> None:
        if self.num_decoder_layers is None:
            object.__setattr__(self, "num_decoder_layers", self.num_layers)
        check_choice("T5Config.attention", self.attention, ATTENTION)
        check_choice("T5Config.remat", self.remat, REMAT)
        if self.relative_attention_num_buckets < 4:
            raise ValueError("relative_attention_num_buckets must be >= 4, got "
                             f"{self.relative_attention_num_buckets}")

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "T5Config":
        """A named size ('tiny', 'mini', 'small', 'base'), with fields optionally overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown T5 preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf_json(cls, path: str | os.PathLike, **overrides: Any) -> "T5Config":
        """Reads a Hugging Face T5 config.json (or the one inside a checkpoint directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        values = json.loads(path.read_text())
        proj = values.get("feed_forward_proj", "relu")
        if proj != "gated-gelu":
            raise ValueError(
                f"{path}: feed_forward_proj={proj!r}; only T5.1.1's 'gated-gelu' is supported "
                "(original T5 uses 'relu' with a single wi; use a t5-v1_1 / flan-t5 checkpoint)")
        names = {f.name for f in dataclasses.fields(cls)} - {"dtype", "attention", "remat"}
        kept = {k: v for k, v in values.items() if k in names}
        kept.setdefault("tie_word_embeddings", True)  # HF's default when the key is absent
        return cls(**{**kept, **overrides})


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),  # tests
    "mini": dict(d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_heads=4),  # CPU DSI runs
    "small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6),  # T5.1.1 sizes
    "base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
}


def shift_right(targets: jax.Array, start_id: int = DECODER_START_ID) -> jax.Array:
    """Decoder inputs for teacher forcing: [start, t_0, ..., t_{n-2}] along the last axis."""
    start = jnp.full(targets.shape[:-1] + (1,), start_id, targets.dtype)
    return jnp.concatenate([start, targets[..., :-1]], axis=-1)


def relative_position_bucket(relative_position: jax.Array, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> jax.Array:
    """T5's bucket of (key position - query position): exact for small distances, logarithmic
    up to `max_distance`, then one last bucket; the causal variant folds positive offsets to 0.
    The log is taken in float32, as the original and HF do, so boundaries match checkpoints."""
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    scaled = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
              / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    large = jnp.minimum(max_exact + scaled.astype(distance.dtype), num_buckets - 1)
    return buckets + jnp.where(distance < max_exact, distance, large)


class KeysValues(NamedTuple):
    """Attention keys and values, heads-major [B, heads, K, d_kv] as attention consumes them (so a
    cache is never transposed per step)."""

    keys: jax.Array
    values: jax.Array


class DecodeCache(NamedTuple):
    """State of incremental decoding: fixed shapes, so it can be a jit argument or a while_loop
    carry. Built by `T5.init_decode_cache`, advanced by `T5.decode_step`."""

    self_attention: tuple[KeysValues, ...]   # per layer [N, H, max_length, d_kv]; slots < index set
    cross_attention: tuple[KeysValues, ...]  # per layer, of the encoder output: [N, H, Li, d_kv]
    input_mask: jax.Array                    # [N, Li] encoder padding mask
    index: jax.Array                         # int32 []: the decoder position the next step reads


class Dense(nn.Module):
    """x·W contracting the last `contract` axes of x; no bias (T5 has none); named kernel axes."""

    features: tuple[int, ...]
    axes: tuple[str, ...]  # kernel names: contracted input dims, then the `features` dims
    stddev: float
    contract: int = 1
    dtype: Any = jnp.float32
    precision: lax.PrecisionLike = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_shape = x.shape[x.ndim - self.contract:]
        init = nn.with_logical_partitioning(nn.initializers.normal(self.stddev), self.axes)
        kernel = self.param("kernel", init, in_shape + tuple(self.features), jnp.float32)
        dims = ((tuple(range(x.ndim - self.contract, x.ndim)), tuple(range(self.contract))), ((), ()))
        return lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), dims,
                               precision=self.precision)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * scale, accumulated in float32 (T5LayerNorm)."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                 ("embed",)), (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        x32 = x32 * lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (x32 * scale).astype(self.dtype)


class RelativePositionBias(nn.Module):
    """The learned per-head bias [1, heads, q_len, k_len] of each relative position bucket."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, q_len: int, k_len: int, q_offset: jax.Array | int = 0) -> jax.Array:
        """Queries sit at positions q_offset + [0, q_len), keys at [0, k_len): with q_len=1 and a
        traced offset i this is row i of the full bias, one incremental decoding step's."""
        cfg = self.config
        table = self.param("embedding", nn.with_logical_partitioning(
            nn.initializers.normal(cfg.d_model**-0.5), (None, "heads")),
            (cfg.relative_attention_num_buckets, cfg.num_heads), jnp.float32)
        relative = jnp.arange(k_len)[None, :] - (q_offset + jnp.arange(q_len))[:, None]
        buckets = relative_position_bucket(relative, self.bidirectional,
                                           cfg.relative_attention_num_buckets,
                                           cfg.relative_attention_max_distance)
        bias = jnp.take(table, buckets, axis=0).transpose(2, 0, 1)[None]  # [1, H, Q, K]
        return nn.with_logical_constraint(bias, (None, "heads", None, None))


class Attention(nn.Module):
    """Multi-head attention with a boolean mask [B|1, 1, Q|1, K] and an optional additive bias;
    softmax in float32, no 1/sqrt(d_kv) scaling. A call is `queries`, `keys_values`, `attend`, kept
    separate so that incremental decoding can cache keys and values."""

    config: T5Config
    precision: lax.PrecisionLike = None

    def setup(self) -> None:
        cfg, dtype = self.config, self.config.compute_dtype
        heads, d_kv, d = cfg.num_heads, cfg.d_kv, cfg.d_model

        def proj(stddev: float) -> Dense:
            return Dense((heads, d_kv), ("embed", "heads", "kv"), stddev, 1, dtype, self.precision)

        self.query = proj((d * d_kv) ** -0.5)
        self.key = proj(d**-0.5)
        self.value = proj(d**-0.5)
        self.out = Dense((d,), ("heads", "kv", "embed"), (heads * d_kv) ** -0.5, 2, dtype,
                         self.precision)
        # The name the compact version gave it: it keys the dropout rng, so training is unchanged.
        self.dropout = nn.Dropout(cfg.dropout_rate, name="Dropout_0")

    def queries(self, x: jax.Array) -> jax.Array:
        """Queries [B, heads, Q, d_kv] of x [B, Q, d_model]."""
        q = nn.with_logical_constraint(self.query(x), ("batch", "length", "heads", "kv"))
        return q.transpose(0, 2, 1, 3)

    def keys_values(self, memory: jax.Array) -> KeysValues:
        """Keys and values [B, heads, K, d_kv] of memory [B, K, d_model]."""
        axes = ("batch", "length", "heads", "kv")
        k = nn.with_logical_constraint(self.key(memory), axes)
        v = nn.with_logical_constraint(self.value(memory), axes)
        return KeysValues(k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3))

    def attend(self, q: jax.Array, kv: KeysValues, mask: jax.Array, bias: jax.Array | None,
               deterministic: bool) -> jax.Array:
        """Attention output [B, Q, d_model] of `queries` over `keys_values`."""
        if self.config.attention != "einsum":
            return self._out(self._fused(q, kv, mask, bias))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, kv.keys,
                            precision=self.precision).astype(jnp.float32)
        if bias is not None:
            scores = scores + bias.astype(jnp.float32)
        probs = jax.nn.softmax(jnp.where(mask, scores, _MASKED), axis=-1)
        probs = self.dropout(probs.astype(self.config.compute_dtype), deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bhkd->bhqd", probs, kv.values, precision=self.precision)
        return self._out(ctx.transpose(0, 2, 1, 3))

    def _fused(self, q: jax.Array, kv: KeysValues, mask: jax.Array, bias: jax.Array | None
               ) -> jax.Array:
        """jax.nn.dot_product_attention (XLA, or cuDNN flash) with T5's unscaled logits and
        relative-position bias; [B, Q, heads, d_kv] out."""
        to_bthd = lambda t: t.transpose(0, 2, 1, 3)  # noqa: E731
        implementation = "cudnn" if self.config.attention == "cudnn" else "xla"
        return jax.nn.dot_product_attention(
            to_bthd(q), to_bthd(kv.keys), to_bthd(kv.values),
            bias=None if bias is None else bias.astype(q.dtype), mask=mask, scale=1.0,
            implementation=implementation)

    def _out(self, ctx: jax.Array) -> jax.Array:
        ctx = nn.with_logical_constraint(ctx, ("batch", "length", "heads", "kv"))
        return nn.with_logical_constraint(self.out(ctx), ("batch", "length", "embed"))

    def __call__(self, x: jax.Array, memory: jax.Array, mask: jax.Array,
                 bias: jax.Array | None, deterministic: bool) -> jax.Array:
        # Queries first, as before the split: the order fixes how gradients are summed.
        return self.attend(self.queries(x), self.keys_values(memory), mask, bias, deterministic)


class GatedMLP(nn.Module):
    """wo(gelu_tanh(wi_0 x) * wi_1 x): T5.1.1's gated-GELU feed-forward."""

    config: T5Config
    precision: lax.PrecisionLike = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg, dtype = self.config, self.config.compute_dtype

        def wi(name: str) -> jax.Array:
            h = Dense((cfg.d_ff,), ("embed", "mlp"), cfg.d_model**-0.5, 1, dtype,
                      self.precision, name=name)(x)
            return nn.with_logical_constraint(h, ("batch", "length", "mlp"))

        h = jax.nn.gelu(wi("wi_0"), approximate=True) * wi("wi_1")
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        out = Dense((cfg.d_model,), ("mlp", "embed"), cfg.d_ff**-0.5, 1, dtype,
                    self.precision, name="wo")(h)
        return nn.with_logical_constraint(out, ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
    config: T5Config
    precision: lax.PrecisionLike = None

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array,
                 deterministic: bool) -> jax.Array:
        cfg = self.config
        drop = nn.Dropout(cfg.dropout_rate)
        norm = lambda name: RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name=name)  # noqa: E731
        h = norm("pre_attention_norm")(x)
        h = Attention(cfg, self.precision, name="attention")(h, h, mask, bias, deterministic)
        x = x + drop(h, deterministic=deterministic)
        h = GatedMLP(cfg, self.precision, name="mlp")(norm("pre_mlp_norm")(x), deterministic)
        return nn.with_logical_constraint(x + drop(h, deterministic=deterministic),
                                          ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    config: T5Config
    precision: lax.PrecisionLike = None

    def setup(self) -> None:
        cfg = self.config
        norm = lambda: RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype)  # noqa: E731
        self.pre_self_attention_norm = norm()
        self.self_attention = Attention(cfg, self.precision)
        self.pre_cross_attention_norm = norm()
        self.cross_attention = Attention(cfg, self.precision)
        self.pre_mlp_norm = norm()
        self.mlp = GatedMLP(cfg, self.precision)
        self.dropout = nn.Dropout(cfg.dropout_rate, name="Dropout_0")  # as in Attention

    def __call__(self, y: jax.Array, encoded: jax.Array, self_mask: jax.Array,
                 cross_mask: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
        drop = functools.partial(self.dropout, deterministic=deterministic)
        h = self.pre_self_attention_norm(y)
        y = y + drop(self.self_attention(h, h, self_mask, bias, deterministic))
        h = self.pre_cross_attention_norm(y)
        y = y + drop(self.cross_attention(h, encoded, cross_mask, None, deterministic))
        h = self.mlp(self.pre_mlp_norm(y), deterministic)
        return nn.with_logical_constraint(y + drop(h), ("batch", "length", "embed"))

    def with_cross_kv(self, y: jax.Array, cross_kv: KeysValues, self_mask: jax.Array,
                      cross_mask: jax.Array, bias: jax.Array) -> jax.Array:
        """`__call__` without dropout, cross-attending over precomputed encoder keys and values."""
        h = self.pre_self_attention_norm(y)
        y = y + self.self_attention(h, h, self_mask, bias, True)
        h = self.pre_cross_attention_norm(y)
        attention = self.cross_attention
        y = y + attention.attend(attention.queries(h), cross_kv, cross_mask, None, True)
        y = y + self.mlp(self.pre_mlp_norm(y), True)
        return nn.with_logical_constraint(y, ("batch", "length", "embed"))

    def step(self, y: jax.Array, kv: KeysValues, cross_kv: KeysValues, self_mask: jax.Array,
             cross_mask: jax.Array, bias: jax.Array, index: jax.Array
             ) -> tuple[jax.Array, KeysValues]:
        """`__call__` for the one position `index` (y [N, 1, d], no dropout): its keys and values
        are written into the cache `kv` at `index`, then it attends over the cached positions."""
        h = self.pre_self_attention_norm(y)
        kv = KeysValues(*(lax.dynamic_update_slice_in_dim(cache, new.astype(cache.dtype), index,
                                                          axis=2)
                          for cache, new in zip(kv, self.self_attention.keys_values(h))))
        attention = self.self_attention
        y = y + attention.attend(attention.queries(h), kv, self_mask, bias, True)
        h = self.pre_cross_attention_norm(y)
        attention = self.cross_attention
        y = y + attention.attend(attention.queries(h), cross_kv, cross_mask, None, True)
        y = y + self.mlp(self.pre_mlp_norm(y), True)
        return nn.with_logical_constraint(y, ("batch", "length", "embed")), kv


class Encoder(nn.Module):
    """Embedded inputs [B, L, d] -> hidden states; padded positions never influence real ones."""

    config: T5Config
    precision: lax.PrecisionLike = None

    @nn.compact
    def __call__(self, x: jax.Array, input_mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        mask = (input_mask > 0)[:, None, None, :]
        bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(
            x.shape[1], x.shape[1])
        layer = EncoderLayer
        if cfg.remat != "none":  # argument 4 (self = 0) is the Python bool `deterministic`
            layer = nn.remat(EncoderLayer, policy=remat_policy(cfg.remat), static_argnums=(4,))
        for i in range(cfg.num_layers):
            x = layer(cfg, self.precision, name=f"layer_{i}")(x, mask, bias, deterministic)
        x = RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="final_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
    """Embedded decoder inputs [B, T, d] + encoder states -> final hidden states, causally; or
    one position at a time with a `DecodeCache` (`init_cache`, `step`)."""

    config: T5Config
    precision: lax.PrecisionLike = None

    def setup(self) -> None:
        cfg = self.config
        self.relpos_bias = RelativePositionBias(cfg, bidirectional=False)
        layer = DecoderLayer
        if cfg.remat != "none":  # __call__'s argument 6 is `deterministic`; decoding is not remat
            layer = nn.remat(DecoderLayer, policy=remat_policy(cfg.remat), static_argnums=(6,))
        self.layers = [layer(cfg, self.precision, name=f"layer_{i}")
                       for i in range(cfg.num_decoder_layers)]
        self.final_norm = RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype)
        self.dropout = nn.Dropout(cfg.dropout_rate, name="Dropout_0")  # as in Attention

    def __call__(self, y: jax.Array, encoded: jax.Array, input_mask: jax.Array,
                 decoder_mask: jax.Array | None, deterministic: bool) -> jax.Array:
        length = y.shape[1]
        causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
        self_mask = causal if decoder_mask is None else causal & (decoder_mask > 0)[:, None, None, :]
        cross_mask = (input_mask > 0)[:, None, None, :]
        bias = self.relpos_bias(length, length)
        for layer in self.layers:
            y = layer(y, encoded, self_mask, cross_mask, bias, deterministic)
        return self.dropout(self.final_norm(y), deterministic=deterministic)

    def cross_keys_values(self, encoded: jax.Array) -> tuple[KeysValues, ...]:
        """Every layer's cross-attention keys and values of the encoder states [N, Li, d]."""
        return tuple(layer.cross_attention.keys_values(encoded) for layer in self.layers)

    def with_cross_kv(self, y: jax.Array, cross_kv: tuple[KeysValues, ...],
                      input_mask: jax.Array) -> jax.Array:
        """`__call__` (no dropout, causal, no decoder mask) over precomputed `cross_keys_values`."""
        length = y.shape[1]
        self_mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
        cross_mask = (input_mask > 0)[:, None, None, :]
        bias = self.relpos_bias(length, length)
        for layer, kv in zip(self.layers, cross_kv):
            y = layer.with_cross_kv(y, kv, self_mask, cross_mask, bias)
        return self.final_norm(y)

    def init_cache(self, encoded: jax.Array, input_mask: jax.Array,
                   max_length: int) -> DecodeCache:
        cfg = self.config
        shape = (encoded.shape[0], cfg.num_heads, max_length, cfg.d_kv)
        empty = KeysValues(jnp.zeros(shape, cfg.compute_dtype), jnp.zeros(shape, cfg.compute_dtype))
        return DecodeCache(
            self_attention=tuple(empty for _ in self.layers),
            cross_attention=tuple(layer.cross_attention.keys_values(encoded)
                                  for layer in self.layers),
            input_mask=input_mask, index=jnp.zeros((), jnp.int32))

    def step(self, y: jax.Array, cache: DecodeCache) -> tuple[jax.Array, DecodeCache]:
        """Final hidden state [N, 1, d] of position `cache.index`; the mask and position bias are
        that row of the full causal ones, over all `max_length` cache slots."""
        index, length = cache.index, cache.self_attention[0].keys.shape[2]
        self_mask = (jnp.arange(length) <= index)[None, None, None, :]
        cross_mask = (cache.input_mask > 0)[:, None, None, :]
        bias = self.relpos_bias(1, length, index)
        written = []
        for layer, kv, cross_kv in zip(self.layers, cache.self_attention, cache.cross_attention):
            y, kv = layer.step(y, kv, cross_kv, self_mask, cross_mask, bias, index)
            written.append(kv)
        return self.final_norm(y), cache._replace(self_attention=tuple(written), index=index + 1)


class T5(nn.Module):
    """input ids [B, Li] + mask, decoder input ids [B, T] (+ mask) -> logits [B, T, vocab].

    When generating (via `apply(..., method=...)`), call `encode` once, then `decode` per step
    over the whole prefix, or `init_decode_cache` once and `decode_step` per step.
    `precision` reaches every matmul (e.g. 'highest' to forbid TF32 on GPUs).
    """

    config: T5Config
    precision: lax.PrecisionLike = None

    def setup(self) -> None:
        cfg = self.config
        self.shared = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype,
                               embedding_init=nn.with_logical_partitioning(
                                   nn.initializers.normal(1.0), ("vocab", "embed")))
        self.encoder = Encoder(cfg, self.precision)
        self.decoder = Decoder(cfg, self.precision)
        if not cfg.tie_word_embeddings:
            # Fan-in scaled (as t5x), not HF's std 1.0, so fresh logits start near unit scale.
            self.lm_head = Dense((cfg.vocab_size,), ("embed", "vocab"), cfg.d_model**-0.5, 1,
                                 cfg.compute_dtype, self.precision)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def embed(self, ids: jax.Array, deterministic: bool) -> jax.Array:
        ids = nn.with_logical_constraint(ids, ("batch", "length"))
        x = self.dropout(self.shared(ids), deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def encode(self, input_ids: jax.Array, input_mask: jax.Array,
               deterministic: bool = True) -> jax.Array:
        """Encoder hidden states [B, Li, d_model]."""
        return self.encoder(self.embed(input_ids, deterministic), input_mask, deterministic)

    def decode(self, encoded: jax.Array, input_mask: jax.Array, decoder_input_ids: jax.Array,
               decoder_mask: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
        """float32 logits [B, T, vocab] at every decoder position, causally masked: position t
        sees decoder inputs 0..t only (and `decoder_mask` may hide padded inputs too)."""
        y = self.decoder(self.embed(decoder_input_ids, deterministic), encoded, input_mask,
                         decoder_mask, deterministic)
        return self.logits(y)

    def decode_at(self, encoded: jax.Array, input_mask: jax.Array, decoder_input_ids: jax.Array,
                  position: jax.Array) -> jax.Array:
        """float32 logits [B, vocab] of one (possibly traced) position: `decode(...)[:, position]`,
        with the output layer applied to that position only (it dominates with a large vocab)."""
        y = self.decoder(self.embed(decoder_input_ids, True), encoded, input_mask, None, True)
        return self.logits(lax.dynamic_index_in_dim(y, position, axis=1, keepdims=True))[:, 0]

    def cross_keys_values(self, encoded: jax.Array) -> tuple[KeysValues, ...]:
        """The decoder's cross-attention keys and values of `encoded`, per layer: computed once
        per query, then repeated per beam (`decode_at_cross`), instead of once per beam and step."""
        return self.decoder.cross_keys_values(encoded)

    def decode_at_cross(self, cross_kv: tuple[KeysValues, ...], input_mask: jax.Array,
                        decoder_input_ids: jax.Array, position: jax.Array) -> jax.Array:
        """`decode_at` from precomputed `cross_keys_values` (rows aligned with the decoder
        inputs): float32 logits [B, vocab] of `position`."""
        y = self.decoder.with_cross_kv(self.embed(decoder_input_ids, True), cross_kv, input_mask)
        return self.logits(lax.dynamic_index_in_dim(y, position, axis=1, keepdims=True))[:, 0]

    def logits(self, y: jax.Array) -> jax.Array:
        """float32 vocabulary logits [B, T, vocab] of final decoder states [B, T, d_model]."""
        if self.config.tie_word_embeddings:
            logits = self.shared.attend(y * self.config.d_model**-0.5)
        else:
            logits = self.lm_head(y)
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))

    def init_decode_cache(self, encoded: jax.Array, input_mask: jax.Array,
                          max_length: int) -> DecodeCache:
        """An empty cache for up to `max_length` `decode_step`s over `encoded` [N, Li, d_model];
        the encoder states are projected to cross-attention keys and values here, once."""
        return self.decoder.init_cache(encoded, input_mask, max_length)

    def decode_step(self, cache: DecodeCache, decoder_input_ids: jax.Array
                    ) -> tuple[jax.Array, DecodeCache]:
        """(float32 logits [N, vocab] of position t = cache.index, the cache advanced to t + 1),
        given that position's decoder input ids [N] (the start id at t = 0, then the previous
        token): `decode(...)[:, t]` of the prefix fed so far, without recomputing it. Dropout is
        off; steps past the cache's max_length are not detected (jit cannot raise)."""
        y, cache = self.decoder.step(self.embed(decoder_input_ids[:, None], True), cache)
        return self.logits(y)[:, 0], cache

    def __call__(self, input_ids: jax.Array, input_mask: jax.Array, decoder_input_ids: jax.Array,
                 decoder_mask: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
        encoded = self.encode(input_ids, input_mask, deterministic)
        return self.decode(encoded, input_mask, decoder_input_ids, decoder_mask, deterministic)
