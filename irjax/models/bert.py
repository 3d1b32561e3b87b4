"""A BERT-style Transformer encoder in Flax linen (post-LN, exact-erf GELU), as BERT and MiniLM.

Every parameter is created through `nn.with_logical_partitioning` and large activations pass
through `nn.with_logical_constraint`, both with the logical axis names 'vocab', 'embed', 'mlp',
'heads', 'kv', 'batch', 'length'. Outside a mesh these are no-ops; under a mesh with logical axis
rules the same module shards without code changes. Parameter names and layouts are what
`irjax.models.hf_import` fills from Hugging Face checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax import lax

from irjax.choices import check_choice
from irjax.models.efficiency import ATTENTION, REMAT, remat_policy
from irjax.models.int8 import int8_matmul

Dtype = Any
Initializer = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture fields of a Hugging Face BERT config.json (defaults: MiniLM-L6-H384)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BertConfig":
        """Keeps the known fields; rejects configs this encoder would silently misread."""
        act = values.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"hidden_act={act!r} is not supported; this encoder uses exact GELU")
        pos = values.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ValueError(f"position_embedding_type={pos!r} is not supported, only 'absolute'")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "BertConfig":
        """Reads config.json (or the config.json inside a checkpoint directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_dict(json.loads(path.read_text()))

    def num_params(self, include_embeddings: bool = True) -> int:
        d, f, n = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        per_layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
        emb = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * d + 2 * d
        return n * per_layer + (emb if include_embeddings else 0)


def _init(config: BertConfig) -> Initializer:
    return nn.initializers.truncated_normal(stddev=config.initializer_range)


class DenseGeneral(nn.Module):
    """y = x·W + b contracting the last `contract` dims of x, with logically named kernel axes."""

    features: tuple[int, ...]
    axes: tuple[str, ...]  # names of the kernel: contracted input dims, then `features` dims
    contract: int = 1
    kernel_init: Initializer = nn.initializers.lecun_normal()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: lax.PrecisionLike = None
    int8: bool = False  # dynamic int8 matmul (inference; irjax/models/int8.py)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_shape = x.shape[x.ndim - self.contract :]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.axes),
            in_shape + tuple(self.features),
            self.param_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), self.axes[self.contract :]),
            tuple(self.features),
            self.param_dtype,
        )
        if self.int8:
            return (int8_matmul(x, kernel, self.contract) + bias).astype(self.dtype)
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        lhs = tuple(range(x.ndim - self.contract, x.ndim))
        rhs = tuple(range(self.contract))
        y = lax.dot_general(x, kernel, ((lhs, rhs), ((), ())), precision=self.precision)
        return y + bias


def _layer_norm(config: BertConfig, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        name=name,
    )


class BertEmbeddings(nn.Module):
    """Word + absolute position + token type embeddings, then LayerNorm and dropout."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, ids: jax.Array, token_types: jax.Array | None, deterministic: bool) -> jax.Array:
        cfg = self.config
        if ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {ids.shape[1]} exceeds max_position_embeddings "
                f"{cfg.max_position_embeddings}; truncate inputs"
            )

        def embed(num: int, axes: tuple[str | None, str], name: str) -> nn.Embed:
            init = nn.with_logical_partitioning(_init(cfg), axes)
            return nn.Embed(num, cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                            embedding_init=init, name=name)

        x = embed(cfg.vocab_size, ("vocab", "embed"), "word_embeddings")(ids)
        positions = jnp.arange(ids.shape[1], dtype=jnp.int32)[None, :]
        x = x + embed(cfg.max_position_embeddings, (None, "embed"), "position_embeddings")(positions)
        if token_types is None:
            token_types = jnp.zeros_like(ids)
        x = x + embed(cfg.type_vocab_size, (None, "embed"), "token_type_embeddings")(token_types)
        x = _layer_norm(cfg, self.dtype, self.param_dtype, "layer_norm")(x)
        x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention over a padding mask; softmax in float32 whatever the dtype."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: lax.PrecisionLike = None
    attention: str = "einsum"  # see ATTENTION
    int8: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        heads, head_dim = cfg.num_attention_heads, cfg.head_dim

        def proj(name: str) -> DenseGeneral:
            return DenseGeneral((heads, head_dim), ("embed", "heads", "kv"), 1, _init(cfg),
                                self.dtype, self.param_dtype, self.precision, self.int8, name=name)

        qkv_axes = ("batch", "length", "heads", "kv")
        q = nn.with_logical_constraint(proj("query")(x), qkv_axes)
        k = nn.with_logical_constraint(proj("key")(x), qkv_axes)
        v = nn.with_logical_constraint(proj("value")(x), qkv_axes)
        if self.attention != "einsum":
            return self._out(self._fused(q, k, v, mask))
        q = q * jnp.asarray(head_dim**-0.5, self.dtype)
        # Heads-major [batch, heads, length, kv] puts the batch dims of both attention matmuls
        # first; XLA's CPU dot emitter ran them 2-4x faster so than with heads in the middle.
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision=self.precision)
        bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(self.dtype)
        probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bhkd->bhqd", probs, v, precision=self.precision)
        return self._out(ctx.transpose(0, 2, 1, 3))

    def _fused(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
        """jax.nn.dot_product_attention over [batch, length, heads, kv]; padding given as key
        lengths for cuDNN (masks are right-padded: real tokens first), as a mask otherwise."""
        if self.attention == "cudnn":
            lengths = jnp.sum(mask, axis=-1, dtype=jnp.int32)
            return jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths,
                                                key_value_seq_lengths=lengths,
                                                implementation="cudnn")
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :] > 0,
                                            implementation="xla")

    def _out(self, ctx: jax.Array) -> jax.Array:
        cfg = self.config
        ctx = nn.with_logical_constraint(ctx, ("batch", "length", "heads", "kv"))
        out = DenseGeneral((cfg.hidden_size,), ("heads", "kv", "embed"), 2, _init(cfg),
                           self.dtype, self.param_dtype, self.precision, self.int8, name="out")(ctx)
        return nn.with_logical_constraint(out, ("batch", "length", "embed"))


class BertLayer(nn.Module):
    """attention -> add & norm -> GELU MLP -> add & norm (post-LN, as original BERT)."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: lax.PrecisionLike = None
    attention: str = "einsum"
    int8: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        dropout = nn.Dropout(cfg.hidden_dropout_prob)
        h = BertSelfAttention(cfg, self.dtype, self.param_dtype, self.precision, self.attention,
                              self.int8, name="attention")(x, mask, deterministic)
        x = _layer_norm(cfg, self.dtype, self.param_dtype, "attention_norm")(
            x + dropout(h, deterministic=deterministic))
        h = DenseGeneral((cfg.intermediate_size,), ("embed", "mlp"), 1, _init(cfg),
                         self.dtype, self.param_dtype, self.precision, self.int8, name="wi")(x)
        h = nn.with_logical_constraint(jax.nn.gelu(h, approximate=False), ("batch", "length", "mlp"))
        h = DenseGeneral((cfg.hidden_size,), ("mlp", "embed"), 1, _init(cfg),
                         self.dtype, self.param_dtype, self.precision, self.int8, name="wo")(h)
        x = _layer_norm(cfg, self.dtype, self.param_dtype, "output_norm")(
            x + dropout(h, deterministic=deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class BertEncoder(nn.Module):
    """Token ids [batch, length] and a 0/1 mask -> hidden states [batch, length, hidden_size].

    `dtype` is the compute dtype, `param_dtype` the storage dtype of parameters; `precision`
    is passed to every matmul (e.g. 'highest' to forbid TF32 on GPUs). `attention` and `remat`
    are the efficiency switches of irjax/models/efficiency.py (ATTENTION, REMAT); parameters are the
    same whatever they are.
    """

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: lax.PrecisionLike = None
    attention: str = "einsum"
    remat: str = "none"
    int8: bool = False  # dynamic int8 dense projections, for CPU inference (irjax/models/int8.py)

    @nn.compact
    def __call__(
        self,
        ids: jax.Array,
        mask: jax.Array,
        token_types: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        ids = nn.with_logical_constraint(ids, ("batch", "length"))
        x = BertEmbeddings(self.config, self.dtype, self.param_dtype, name="embeddings")(
            ids, token_types, deterministic)
        check_choice("BertEncoder.attention", self.attention, ATTENTION)
        check_choice("BertEncoder.remat", self.remat, REMAT)
        layer = BertLayer
        if self.remat != "none":  # argument 3 (self = 0) is the Python bool `deterministic`
            layer = nn.remat(BertLayer, policy=remat_policy(self.remat), static_argnums=(3,))
        for i in range(self.config.num_hidden_layers):
            x = layer(self.config, self.dtype, self.param_dtype, self.precision, self.attention,
                      self.int8, name=f"layer_{i}")(x, mask, deterministic)
        return x


def flops_per_token(config: BertConfig, length: int) -> float:
    """Forward FLOPs per token at sequence length `length`: matmuls plus attention scores/mixing."""
    d, f = config.hidden_size, config.intermediate_size
    dense = 2 * (4 * d * d + 2 * d * f)
    attention = 2 * 2 * length * d
    return float(config.num_hidden_layers * (dense + attention))
