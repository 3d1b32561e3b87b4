"""A decoder-only Transformer language model in Flax linen: the Gemma 3 and Llama / Qwen2 families.

One module, switched by `DecoderConfig` flags rather than subclasses, because the families differ
in a handful of places only:

  Gemma 3      RMSNorm scaled by (1 + weight); norms before *and* after attention and MLP; GeGLU
               (tanh GELU); RMSNorm on queries and keys per head (QK-norm); layers alternate
               5 sliding-window (local, RoPE base 10k) : 1 global (RoPE base 1M); embeddings
               multiplied by sqrt(hidden); scores scaled by query_pre_attn_scalar**-0.5; tied
               output. EmbeddingGemma is the same stack with bidirectional attention.
  Llama/Qwen2  RMSNorm scaled by weight; pre-norms only; SwiGLU; one RoPE base; grouped-query
               attention; Qwen2 adds q/k/v biases; tied or untied output.

Attention is decided by positions, not by slots: every key carries its token position and a
validity bit, and a query at position p sees a valid key at position k when k <= p (causal) and,
in a sliding layer, p - k < window. So left padding, padding in the middle (a shared prefix
followed by padded continuations) and a key/value cache all use the same mask. RoPE is the
rotate-half layout of Hugging Face checkpoints (GGUF's interleaved Llama layout is undone at
import).

Parameters and activations carry the logical axis names of irjax/parallel/partitioning.py
('vocab', 'embed', 'mlp', 'heads', 'kv', 'batch', 'length'); key/value heads use 'heads' too.
`irjax.models.lm_import` fills the parameter tree from safetensors or GGUF files.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from irjax.choices import check_choice

ACTIVATIONS = ("gelu_tanh", "silu")
_MASKED = -1e30  # a masked score; finite, so a row with no visible key gives no NaN


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Architecture of a decoder-only LM. Build one with `gemma3`, `llama` or `qwen2`, or from a
    checkpoint with irjax.models.lm_import."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10_000.0          # global (full attention) layers
    rope_local_theta: float | None = None  # sliding layers; None: rope_theta
    rope_scaling_factor: float = 1.0      # linear position scaling of global layers (Gemma 3 4B+)
    sliding_window: int | None = None     # keys per query in a sliding layer (incl. itself)
    sliding_window_pattern: int = 0       # every n-th layer is global, the rest slide; 0: all slide
    # The family switches (see the module docstring).
    norm_offset: float = 0.0              # RMSNorm multiplies by (norm_offset + weight)
    sandwich_norms: bool = False          # norms after attention and after the MLP too
    qk_norm: bool = False
    activation: str = "silu"
    scale_embeddings: bool = False        # embeddings times sqrt(hidden_size)
    attention_bias: bool = False          # biases on q/k/v projections (Qwen2)
    query_pre_attn_scalar: float | None = None  # scores scaled by this**-0.5; None: head_dim
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    tie_word_embeddings: bool = True
    causal: bool = True                   # False: bidirectional (EmbeddingGemma)
    max_position_embeddings: int = 8192   # informational: the trained context
    dtype: Any = "float32"                # compute dtype; logits are float32

    def __post_init__(self) -> None:
        check_choice("DecoderConfig.activation", self.activation, ACTIVATIONS)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads="
                             f"{self.num_kv_heads} (grouped-query attention)")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.sliding_window_pattern and not self.sliding_window:
            raise ValueError("sliding_window_pattern is set but sliding_window is not")

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def is_sliding(self, layer: int) -> bool:
        """Whether layer `layer` attends over a sliding window (Gemma 3: all but every 6th;
        pattern 0 with a window: every layer)."""
        if not self.sliding_window:
            return False
        return self.sliding_window_pattern == 0 or (layer + 1) % self.sliding_window_pattern != 0

    @classmethod
    def gemma3(cls, **fields: Any) -> "DecoderConfig":
        """Gemma 3 text defaults (local : global 5 : 1, RoPE 10k / 1M); fields override."""
        defaults = dict(norm_offset=1.0, sandwich_norms=True, qk_norm=True,
                        activation="gelu_tanh", scale_embeddings=True, rope_theta=1_000_000.0,
                        rope_local_theta=10_000.0, sliding_window=512, sliding_window_pattern=6,
                        tie_word_embeddings=True)
        return cls(**{**defaults, **fields})

    @classmethod
    def llama(cls, **fields: Any) -> "DecoderConfig":
        """Llama defaults (SwiGLU, pre-norms, weight-scaled RMSNorm); fields override."""
        return cls(**{**dict(rms_norm_eps=1e-5), **fields})

    @classmethod
    def qwen2(cls, **fields: Any) -> "DecoderConfig":
        """Qwen2 = Llama with q/k/v biases; fields override."""
        return cls(**{**dict(attention_bias=True, rope_theta=1_000_000.0), **fields})


class LayerCache(NamedTuple):
    """One layer's cached keys and values, [B, kv_heads, max_length, head_dim]."""

    keys: jax.Array
    values: jax.Array


class DecodeCache(NamedTuple):
    """Incremental-decoding state of fixed shapes (a jit argument or while_loop carry). Slot s
    holds the token written s-th; its position and validity decide what may attend to it."""

    layers: tuple[LayerCache, ...]
    key_positions: jax.Array  # int32 [B, max_length]
    key_valid: jax.Array      # bool [B, max_length]; False for padding and unwritten slots
    next_position: jax.Array  # int32 [B]: the position the row's next real token gets
    index: jax.Array          # int32 []: the next slot to write

    @property
    def max_length(self) -> int:
        return self.key_valid.shape[1]

    def repeat(self, copies: int) -> "DecodeCache":
        """Each row `copies` times (row b -> rows b*copies .. b*copies+copies-1): a prefix encoded
        once, shared by several continuations."""
        rows = lambda x: jnp.repeat(x, copies, axis=0)  # noqa: E731
        return DecodeCache(tuple(LayerCache(rows(c.keys), rows(c.values)) for c in self.layers),
                           rows(self.key_positions), rows(self.key_valid),
                           rows(self.next_position), self.index)


def positions_from_mask(mask: jax.Array, start: jax.Array | int = 0) -> jax.Array:
    """Token positions [B, T] of a 0/1 mask: real tokens count up from `start` ([B] or scalar);
    a pad takes the position of the next real token (it is never attended to)."""
    mask = mask.astype(jnp.int32)
    return jnp.asarray(start, jnp.int32).reshape(-1, 1) + jnp.cumsum(mask, axis=1) - mask


def attention_mask(q_pos: jax.Array, k_pos: jax.Array, k_valid: jax.Array, causal: bool,
                   window: int | None) -> jax.Array:
    """bool [B, 1, Q, K]: which keys each query sees, from positions ([B, Q], [B, K]).

    Causal: 0 <= p - k (and p - k < window in a sliding layer, HF's `kv > q - window`).
    Bidirectional: every valid key, or |p - k| <= window // 2 in a sliding layer (EmbeddingGemma;
    HF turns the window w into w // 2 + 1 exclusive; checked against transformers 5.25).
    """
    diff = q_pos[:, :, None] - k_pos[:, None, :]
    if causal:
        seen = diff >= 0
        if window:
            seen &= diff < window
    else:
        seen = jnp.ones(diff.shape, bool)
        if window:
            seen &= jnp.abs(diff) <= window // 2
    return (seen & k_valid[:, None, :])[:, None]


def rope(x: jax.Array, positions: jax.Array, theta: float, scaling: float = 1.0) -> jax.Array:
    """Rotary embedding of x [B, T, H, D] at positions [B, T], rotate-half layout, in float32."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles = (positions.astype(jnp.float32) / scaling)[..., None] * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    half = dim // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * (offset + weight), in float32. Gemma stores weight - 1 (offset
    1, weights initialised to 0); Llama stores the scale itself (offset 0, initialised to 1)."""

    epsilon: float
    offset: float = 0.0
    axis_name: str = "embed"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.constant(1.0 - self.offset)
        weight = self.param("scale", nn.with_logical_partitioning(init, (self.axis_name,)),
                            (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        x32 = x32 * lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (x32 * (self.offset + weight.astype(jnp.float32))).astype(self.dtype)


class Dense(nn.Module):
    """x·W (+ b) contracting the last `contract` axes of x, with logically named kernel axes."""

    features: tuple[int, ...]
    axes: tuple[str, ...]  # kernel names: contracted input dims, then the `features` dims
    contract: int = 1
    use_bias: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_shape = x.shape[x.ndim - self.contract:]
        init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), self.axes)
        kernel = self.param("kernel", init, in_shape + tuple(self.features), jnp.float32)
        dims = ((tuple(range(x.ndim - self.contract, x.ndim)), tuple(range(self.contract))),
                ((), ()))
        y = lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), dims)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(
                nn.initializers.zeros_init(), self.axes[self.contract:]), tuple(self.features),
                jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE, optional QK-norm, softcap and a position mask."""

    config: DecoderConfig
    sliding: bool

    def setup(self) -> None:
        cfg, dtype = self.config, self.config.compute_dtype

        def proj(heads: int) -> Dense:
            return Dense((heads, cfg.head_dim), ("embed", "heads", "kv"), 1, cfg.attention_bias,
                         dtype)

        self.query = proj(cfg.num_heads)
        self.key = proj(cfg.num_kv_heads)
        self.value = proj(cfg.num_kv_heads)
        self.out = Dense((cfg.hidden_size,), ("heads", "kv", "embed"), 2, False, dtype)
        if cfg.qk_norm:
            self.query_norm = RMSNorm(cfg.rms_norm_eps, cfg.norm_offset, "kv", dtype)
            self.key_norm = RMSNorm(cfg.rms_norm_eps, cfg.norm_offset, "kv", dtype)

    def _theta(self) -> tuple[float, float]:
        cfg = self.config
        if self.sliding:
            return (cfg.rope_local_theta or cfg.rope_theta), 1.0
        return cfg.rope_theta, cfg.rope_scaling_factor

    def project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, ...]:
        """Roped queries [B, T, H, D] and keys, and values [B, T, K, D] of x [B, T, hidden]."""
        axes = ("batch", "length", "heads", "kv")
        q, k, v = (nn.with_logical_constraint(p(x), axes)
                   for p in (self.query, self.key, self.value))
        if self.config.qk_norm:
            q, k = self.query_norm(q), self.key_norm(k)
        theta, scaling = self._theta()
        return rope(q, positions, theta, scaling), rope(k, positions, theta, scaling), v

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
               query_weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        """Output [B, Q, hidden] of queries [B, Q, H, D] over keys/values [B, K, KV, D] under a
        bool mask [B, 1, Q, K]; softmax in float32. With `query_weights` [B, Q] also the
        attention mass each key receives, sum over heads and queries of weight x probability
        ([B, K], float32); without them nothing extra is computed (None)."""
        cfg = self.config
        b, qlen, heads, dim = q.shape
        groups = heads // cfg.num_kv_heads
        scale = (cfg.query_pre_attn_scalar or cfg.head_dim) ** -0.5
        q = q.reshape(b, qlen, cfg.num_kv_heads, groups, dim)
        scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k).astype(jnp.float32) * scale
        if cfg.attn_logit_softcap:
            scores = jnp.tanh(scores / cfg.attn_logit_softcap) * cfg.attn_logit_softcap
        scores = jnp.where(mask[:, :, None], scores, _MASKED)
        probs32 = jax.nn.softmax(scores, axis=-1)
        mass = None if query_weights is None else jnp.einsum(
            "bkgqs,bq->bs", probs32, query_weights.astype(jnp.float32))
        probs = probs32.astype(cfg.compute_dtype)
        ctx = jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(b, qlen, heads, dim)
        ctx = nn.with_logical_constraint(ctx, ("batch", "length", "heads", "kv"))
        return nn.with_logical_constraint(self.out(ctx), ("batch", "length", "embed")), mass


class MLP(nn.Module):
    """Gated feed-forward: down(act(gate(x)) * up(x)), GeGLU or SwiGLU."""

    config: DecoderConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, dtype = self.config, self.config.compute_dtype
        gate = Dense((cfg.intermediate_size,), ("embed", "mlp"), dtype=dtype, name="gate")(x)
        up = Dense((cfg.intermediate_size,), ("embed", "mlp"), dtype=dtype, name="up")(x)
        act = jax.nn.gelu(gate, approximate=True) if cfg.activation == "gelu_tanh" \
            else jax.nn.silu(gate)
        h = nn.with_logical_constraint(act * up, ("batch", "length", "mlp"))
        return Dense((cfg.hidden_size,), ("mlp", "embed"), dtype=dtype, name="down")(h)


class DecoderLayer(nn.Module):
    """Pre-norm attention and MLP residual blocks, with Gemma's post-norms when configured."""

    config: DecoderConfig
    sliding: bool

    def setup(self) -> None:
        cfg = self.config
        def norm() -> RMSNorm:
            return RMSNorm(cfg.rms_norm_eps, cfg.norm_offset, "embed", cfg.compute_dtype)

        self.pre_attention_norm, self.pre_mlp_norm = norm(), norm()
        if cfg.sandwich_norms:
            self.post_attention_norm, self.post_mlp_norm = norm(), norm()
        self.attention = Attention(cfg, self.sliding)
        self.mlp = MLP(cfg)

    def window(self) -> int | None:
        return self.config.sliding_window if self.sliding else None

    def __call__(self, x: jax.Array, positions: jax.Array, key_valid: jax.Array,
                 cache: LayerCache | None = None, index: jax.Array | None = None,
                 key_positions: jax.Array | None = None, query_weights: jax.Array | None = None
                 ) -> tuple[jax.Array, LayerCache | None, jax.Array | None]:
        """x [B, T, hidden] at `positions` [B, T]. Without a cache the T tokens attend to each
        other (`key_valid` [B, T]); with one they are written at slot `index` and attend to every
        cached slot (`key_valid`, `key_positions` [B, S] already include them). Returns the new
        x, the cache and, given `query_weights` [B, T], the attention mass per key (`attend`)."""
        cfg = self.config
        h = self.pre_attention_norm(x)
        q, k, v = self.attention.project(h, positions)
        if cache is not None:
            write = lambda c, new: lax.dynamic_update_slice_in_dim(  # noqa: E731
                c, new.astype(c.dtype).transpose(0, 2, 1, 3), index, axis=2)
            cache = LayerCache(write(cache.keys, k), write(cache.values, v))
            k, v = (c.transpose(0, 2, 1, 3).astype(q.dtype) for c in cache)
        else:
            key_positions = positions
        mask = attention_mask(positions, key_positions, key_valid, cfg.causal, self.window())
        h, mass = self.attention.attend(q, k, v, mask, query_weights)
        if cfg.sandwich_norms:
            h = self.post_attention_norm(h)
        x = x + h
        h = self.mlp(self.pre_mlp_norm(x))
        if cfg.sandwich_norms:
            h = self.post_mlp_norm(h)
        return nn.with_logical_constraint(x + h, ("batch", "length", "embed")), cache, mass


class DecoderLM(nn.Module):
    """Token ids [B, T] -> float32 logits [B, T, vocab] (`__call__`), final hidden states
    (`hidden`), or incremental decoding with a `DecodeCache` (`init_cache` below, `extend`)."""

    config: DecoderConfig

    def setup(self) -> None:
        cfg = self.config
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed"))
        self.embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.compute_dtype,
                              embedding_init=init)
        self.layers = [DecoderLayer(cfg, cfg.is_sliding(i), name=f"layer_{i}")
                       for i in range(cfg.num_layers)]
        self.final_norm = RMSNorm(cfg.rms_norm_eps, cfg.norm_offset, "embed", cfg.compute_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = Dense((cfg.vocab_size,), ("embed", "vocab"), dtype=cfg.compute_dtype)

    def _embed(self, ids: jax.Array) -> jax.Array:
        x = self.embed(nn.with_logical_constraint(ids, ("batch", "length")))
        if self.config.scale_embeddings:
            x = x * jnp.asarray(math.sqrt(self.config.hidden_size), x.dtype)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))

    def logits(self, hidden: jax.Array) -> jax.Array:
        """float32 logits of final hidden states [..., hidden]."""
        cfg = self.config
        y = self.embed.attend(hidden) if cfg.tie_word_embeddings else self.lm_head(hidden)
        y = y.astype(jnp.float32)
        if cfg.final_logit_softcap:
            y = jnp.tanh(y / cfg.final_logit_softcap) * cfg.final_logit_softcap
        return nn.with_logical_constraint(y, ("batch", "length", "vocab"))

    def hidden(self, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Final (normed) hidden states [B, T, hidden]; `mask` [B, T] is 1 for real tokens (left,
        right or inner padding all work: positions count real tokens only)."""
        mask = jnp.ones(ids.shape, jnp.int32) if mask is None else mask
        positions = positions_from_mask(mask)
        x = self._embed(ids)
        for layer in self.layers:
            x, _, _ = layer(x, positions, mask > 0)
        return self.final_norm(x)

    def __call__(self, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self.logits(self.hidden(ids, mask))

    def extend(self, ids: jax.Array, cache: DecodeCache, mask: jax.Array | None = None,
               last_only: bool = False) -> tuple[jax.Array, DecodeCache]:
        """Appends ids [B, T] (a prompt, or T=1 generated token) at slot `cache.index`; returns
        (float32 logits [B, T, vocab], the advanced cache). Pads (mask 0) take a slot but are never
        attended to. Writing past max_length is not detected (jit cannot raise): size the cache.

        `last_only`: logits [B, 1, vocab] of the last slot only. Generation needs nothing else
        from a left-padded prompt, and the vocabulary projection of every prompt position is a
        large share of the prompt pass (a 49k-152k vocabulary against a ~0.5-1k hidden size)."""
        x, cache, _ = self._extend_layers(ids, cache, mask)
        if last_only:
            x = x[:, -1:]
        return self.logits(self.final_norm(x)), cache

    def attention_mass(self, ids: jax.Array, cache: DecodeCache, query_weights: jax.Array,
                       mask: jax.Array | None = None) -> tuple[jax.Array, DecodeCache]:
        """Appends ids [B, T] as `extend` does and returns, instead of logits, how much attention
        the new tokens pay to every cache slot: float32 [B, max_length], the sum over layers,
        heads and new tokens t of query_weights[b, t] x softmax probability (pads and unwritten
        slots get 0). Attention-based rerankers (ICR) read documents' scores off it; the
        probabilities themselves ([B, heads, T, S] per layer) are never materialised as output."""
        x, cache, mass = self._extend_layers(ids, cache, mask, query_weights)
        del x
        return mass, cache

    def _extend_layers(self, ids: jax.Array, cache: DecodeCache, mask: jax.Array | None,
                       query_weights: jax.Array | None = None
                       ) -> tuple[jax.Array, DecodeCache, jax.Array | None]:
        """The layers of `extend`: (last hidden states before the final norm, the advanced
        cache, the attention mass summed over layers when `query_weights` is given)."""
        mask = jnp.ones(ids.shape, jnp.int32) if mask is None else mask.astype(jnp.int32)
        positions = positions_from_mask(mask, cache.next_position)
        index = cache.index
        key_positions = lax.dynamic_update_slice_in_dim(cache.key_positions, positions, index, 1)
        key_valid = lax.dynamic_update_slice_in_dim(cache.key_valid, mask > 0, index, 1)
        x = self._embed(ids)
        written, total = [], None
        for layer, layer_cache in zip(self.layers, cache.layers):
            x, layer_cache, mass = layer(x, positions, key_valid, layer_cache, index,
                                         key_positions, query_weights)
            written.append(layer_cache)
            if mass is not None:
                total = mass if total is None else total + mass
        return x, DecodeCache(tuple(written), key_positions, key_valid,
                              cache.next_position + jnp.sum(mask, axis=1, dtype=jnp.int32),
                              index + ids.shape[1]), total


def init_cache(config: DecoderConfig, batch: int, max_length: int,
               dtype: Any = None) -> DecodeCache:
    """An empty cache for `max_length` tokens per row (prompt and generated together)."""
    shape = (batch, config.num_kv_heads, max_length, config.head_dim)
    dtype = dtype or config.compute_dtype
    layers = tuple(LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
                   for _ in range(config.num_layers))
    return DecodeCache(layers, jnp.zeros((batch, max_length), jnp.int32),
                       jnp.zeros((batch, max_length), bool), jnp.zeros((batch,), jnp.int32),
                       jnp.zeros((), jnp.int32))
