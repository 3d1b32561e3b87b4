"""Token-level encoder for multi-vector retrieval (ColBERT, XTR): one unit vector per token.

A BERT backbone followed by a linear projection to a small dimension (128 in ColBERT and XTR)
and L2 normalisation, so that token-token dot products are cosines in [-1, 1]. The projection
is new (no pretrained weights exist for it); it carries logical axis names ('embed', 'kv') like
every other kernel, so the module shards under the same logical rules as the dual encoder.

Which tokens take part in scoring is decided outside the module by `token_mask`: padding always
drops out, and ColBERT additionally drops punctuation on the document side. Keeping the mask
separate lets the same encoded vectors be scored with different masking policies.
"""
from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
from jax import lax

from irjax.models.bert import BertConfig, BertEncoder, DenseGeneral
from irjax.models.dual_encoder import l2_normalize
from irjax.models.word_pooling import pool_words

Dtype = Any

DEFAULT_DIM = 128
PROJECTION_AXES = ("embed", "kv")


class TokenEncoderModule(nn.Module):
    """ids [b, L], mask [b, L] -> L2-normalised token vectors [b, L, dim].

    Parameters: {'backbone': <BertEncoder params>, 'projection': {'kernel', 'bias'}}; the
    backbone subtree has exactly the layout `irjax.models.hf_import` produces, so pretrained
    BERT/MiniLM weights drop in under 'backbone'.
    """

    config: BertConfig
    dim: int = DEFAULT_DIM
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: lax.PrecisionLike = None

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array, token_types: jax.Array | None = None,
                 deterministic: bool = True, word_ids: jax.Array | None = None) -> jax.Array:
        """With `word_ids` ([b, L], -1 = no word; `irjax.models.word_pooling.word_ids`) the
        projections are mean-pooled per word before normalising: one vector per word, the words
        a prefix of the L slots. Pooling the projection equals projecting the pooled hidden
        states (the projection is affine), and normalising after pooling keeps unit vectors."""
        hidden = BertEncoder(self.config, self.dtype, self.param_dtype, self.precision,
                             name="backbone")(ids, mask, token_types, deterministic=deterministic)
        init = nn.initializers.truncated_normal(stddev=self.config.initializer_range)
        proj = DenseGeneral((self.dim,), PROJECTION_AXES, 1, init, self.dtype, self.param_dtype,
                            self.precision, name="projection")(hidden)
        proj = nn.with_logical_constraint(proj, ("batch", "length", "kv"))
        if word_ids is not None:
            pooled, words = pool_words(proj, word_ids)
            # Slots past the last word hold a constant, not zeros: the norm's gradient at 0 is NaN.
            proj = jnp.where(words[..., None] > 0, pooled, jnp.ones_like(pooled))
        # Normalise in float32: in bf16 the squared norm of 128 components loses precision.
        return l2_normalize(proj.astype(jnp.float32)).astype(self.dtype)


def token_mask(ids: jax.Array, mask: jax.Array, skip_ids: Iterable[int] | None = None) -> jax.Array:
    """1.0 where a token takes part in scoring, 0.0 for padding and for any id in `skip_ids`.

    ColBERT skips punctuation on documents only (queries keep every token, their [MASK]
    padding included), so callers pass `skip_ids` for the document side.
    """
    keep = jnp.asarray(mask) > 0
    skip = np.asarray(sorted(set(skip_ids or ())), dtype=np.int32)
    if skip.size:
        keep = keep & ~jnp.isin(jnp.asarray(ids), jnp.asarray(skip))
    return keep.astype(jnp.float32)
