"""SPLADE (Formal et al. 2021, SPLADE v2): a BERT encoder plus its masked-LM head, read as one
non-negative weight per vocabulary term, and the FLOPS regularisers that keep those vectors sparse.

    logits[b, t, j] = MLM head(hidden[b, t])_j            # [batch, length, vocab]
    w[b, j]         = max_t mask[b, t] * log(1 + ReLU(logits[b, t, j]))

The log saturates large logits and the max (SPLADE v2's pooling; v1 summed) keeps each term's
strongest evidence. The head is BERT's: dense -> GELU -> LayerNorm -> the word embeddings again
(tied decoder) + a bias per term, so a checkpoint's pretrained MLM head is reused as it is.

FLOPS (Paria et al. 2020) is sum_j (mean_b w[b, j])^2: the expected number of multiplications of
an inverted-index dot product, relaxed to be differentiable; it penalises terms that are active in
many rows of a batch far more than a term active in one. The IDF-aware variant (Geng et al. 2024,
inference-free sparse retrievers) takes the FLOPS of the IDF-weighted document vectors,
sum_j (idf_j * mean_b w[b, j])^2, i.e. of each term's actual contribution to a score whose query
side is the IDF itself.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from irjax.models.bert import BertConfig, BertEncoder, DenseGeneral, _init, _layer_norm

Dtype = Any


class MlmHead(nn.Module):
    """BERT's masked-LM head with the decoder tied to the word embeddings (passed in)."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        cfg = self.config
        h = DenseGeneral((cfg.hidden_size,), ("embed", "mlp"), 1, _init(cfg), self.dtype,
                         self.param_dtype, name="transform")(hidden)
        h = _layer_norm(cfg, self.dtype, self.param_dtype, "transform_norm")(
            jax.nn.gelu(h, approximate=False))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
                          (cfg.vocab_size,), self.param_dtype)
        logits = jnp.einsum("ble,ve->blv", h, word_embeddings.astype(self.dtype))
        return nn.with_logical_constraint(logits + bias.astype(self.dtype), ("batch", "length", "vocab"))


def splade_pool(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """[batch, length, vocab] logits and a 0/1 mask -> [batch, vocab] term weights (float32).

    log(1 + ReLU(.)) is non-decreasing, so the max over tokens is taken on the logits first and
    the function applied once per term: the same value as pooling the weights, without a
    transcendental per (token, term) pair. Padding positions (and all-padding rows) give 0."""
    masked = jnp.where(mask[:, :, None] > 0, logits.astype(jnp.float32), -1e9)
    return jnp.log1p(jax.nn.relu(jnp.max(masked, axis=1)))


class SpladeEncoder(nn.Module):
    """Token ids [batch, length] + mask -> SPLADE vectors [batch, vocab_size].

    Parameters: {'encoder': BertEncoder's tree (what hf_import fills), 'mlm_head': MlmHead's}."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
        encoder = BertEncoder(self.config, self.dtype, self.param_dtype, name="encoder")
        hidden = encoder(ids, mask, deterministic=deterministic)
        table = nn.meta.unbox(encoder.variables["params"]["embeddings"]["word_embeddings"]["embedding"])
        logits = MlmHead(self.config, self.dtype, self.param_dtype, name="mlm_head")(hidden, table)
        return splade_pool(logits, mask)


def flops(weights: jax.Array) -> jax.Array:
    """FLOPS regulariser of a batch of non-negative term vectors [batch, vocab]."""
    return jnp.sum(jnp.square(jnp.mean(weights, axis=0)))


def idf_flops(weights: jax.Array, idf: jax.Array) -> jax.Array:
    """IDF-aware FLOPS: FLOPS of the IDF-weighted vectors (module docstring)."""
    return jnp.sum(jnp.square(idf * jnp.mean(weights, axis=0)))


def lambda_schedule(step: jax.Array, peak: float, warmup_steps: int) -> jax.Array:
    """SPLADE's quadratic warm-up of a regularisation weight: peak * min(1, step / T)^2
    (sparsity is imposed gradually, so early ranking gradients are not drowned)."""
    if warmup_steps <= 0:
        return jnp.asarray(peak, jnp.float32)
    ramp = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)
    return peak * jnp.square(ramp)
