"""The documents a contrastive batch scores every query against: its B positives, then its B*n
hard negatives row-major (row i's negative j sits at column B + i*n + j). The dual-encoder,
SPLADE, multi-vector and AR2 objectives all index their logits by this one layout."""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp


def document_pool(batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """(ids, mask) [B*(1+n), length] of the batch's positives followed by its negatives (just the
    positives when the batch has no `neg_ids`)."""
    ids, mask = batch["pos_ids"], batch["pos_mask"]
    if "neg_ids" not in batch:
        return ids, mask
    length = ids.shape[-1]
    return (jnp.concatenate([ids, batch["neg_ids"].reshape(-1, length)]),
            jnp.concatenate([mask, batch["neg_mask"].reshape(-1, length)]))
