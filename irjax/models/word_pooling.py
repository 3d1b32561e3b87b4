"""Whole-word pooling and the learned keep/drop gate of ColBERTer (Hofstätter et al. 2022).

ColBERTer stores one vector per *word* instead of one per WordPiece token: the vectors of a
word's pieces (a piece written `##...` continues the previous word) are averaged. Special tokens
([CLS], [SEP], padding) and skipped tokens (punctuation on documents) belong to no word. Word ids
follow from the token ids alone (`word_ids`), so the data pipeline stays token-level and the
pooling runs inside the jitted model, at training and at indexing time alike.

On top, a scalar gate per document word, ReLU of a linear function of the word vector
("contextualized stopwords"), multiplies the word's score contribution; an L1 penalty on the
gates (`gate_penalty`) pushes many of them to exactly 0, and a word whose gate is 0 is not stored.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=8)
def _continuation_table(continuation_ids: tuple[int, ...]) -> np.ndarray:
    table = np.zeros(max(continuation_ids, default=-1) + 2, dtype=bool)  # last entry stays False
    table[list(continuation_ids)] = True
    return table


def word_ids(ids: jax.Array, keep: jax.Array, continuation_ids: Sequence[int]) -> jax.Array:
    """int32 [b, L]: the index of each kept token's word within its row (0, 1, ...), -1 for
    tokens that belong to no word (keep == 0).

    A kept token starts a new word unless it is a continuation piece directly after another kept
    token; so a continuation after a dropped token (never produced by BERT's pre-tokenizer, which
    splits punctuation off) starts a word of its own instead of joining across the gap.
    """
    table = jnp.asarray(_continuation_table(tuple(sorted(set(int(i) for i in continuation_ids)))))
    ids = jnp.asarray(ids)
    kept = jnp.asarray(keep) > 0
    continues = table[jnp.clip(ids, 0, table.shape[0] - 1)]
    after_kept = jnp.concatenate([jnp.zeros_like(kept[:, :1]), kept[:, :-1]], axis=1)
    starts = kept & ~(continues & after_kept)
    index = jnp.cumsum(starts.astype(jnp.int32), axis=1) - 1
    return jnp.where(kept, index, -1).astype(jnp.int32)


def pool_words(x: jax.Array, ids_of_words: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean of `x` [b, L, d] over each word's tokens -> ([b, L, d], word mask [b, L] float32).

    Words are numbered from 0 in each row, so they fill a prefix of the L slots (a row never has
    more words than tokens); slots past the last word are zeros with mask 0.
    """
    length = x.shape[1]
    member = (ids_of_words[:, :, None] == jnp.arange(length)[None, None, :]).astype(jnp.float32)
    sums = jnp.einsum("btw,btd->bwd", member, x.astype(jnp.float32))
    counts = jnp.sum(member, axis=1)                                    # [b, W]
    mean = sums / jnp.maximum(counts, 1.0)[..., None]
    return mean.astype(x.dtype), (counts > 0).astype(jnp.float32)


class WordGate(nn.Module):
    """Unit word vectors [b, W, dim] -> gates [b, W] = ReLU(v . (scale w) + scale b), >= 0.

    `scale` is a learning-rate multiplier for this head: under Adam a parameter moves by about
    the learning rate per step whatever its gradient, so a fine-tuning rate of 3e-5 would leave
    the gate where it started. The forward pass uses scale x the stored parameters while the
    gradient reaches them unscaled (`_lr_multiplied`), so the head moves `scale` times faster
    without inflating the global gradient norm that clipping looks at. The kernel starts at 0
    and the bias at 1/scale, so every gate starts at 1: training begins as plain word-level
    MaxSim and the L1 penalty has to earn each removal.
    """

    scale: float = 1000.0

    @nn.compact
    def __call__(self, vectors: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                   ("kv",)),
                            (vectors.shape[-1],), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(
            nn.initializers.constant(1.0 / self.scale), ()), (), jnp.float32)
        pre = (jnp.einsum("bwd,d->bw", vectors.astype(jnp.float32),
                          _lr_multiplied(kernel, self.scale)) + _lr_multiplied(bias, self.scale))
        return jax.nn.relu(pre)


def _lr_multiplied(param: jax.Array, scale: float) -> jax.Array:
    """`scale * param` in the forward pass, with the gradient of `param` itself (not scaled)."""
    return param + (scale - 1.0) * jax.lax.stop_gradient(param)


def gate_penalty(gates: jax.Array, words: jax.Array) -> jax.Array:
    """L1 norm of the gates per real word: sum(|g| * words) / number of words (gates are >= 0,
    so this is their mean); a mean rather than a sum keeps the weight independent of batch size
    and document length."""
    words = words.astype(jnp.float32)
    return jnp.sum(jnp.abs(gates) * words) / jnp.maximum(jnp.sum(words), 1.0)
