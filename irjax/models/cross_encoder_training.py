"""The cross-encoder as a `TrainableModel`: localized contrastive estimation (LCE).

Gao, Dai and Callan 2021 ("Rethink Training of BERT Rerankers in Multi-Stage Retrieval
Pipeline") train a reranker on groups of one positive and n hard negatives drawn from the very
first stage it will rerank, with softmax cross-entropy over the group's 1+n scores: the model
learns to separate the positive from exactly the confusers it will meet, and the loss sees the
whole group at once instead of independent binary labels.

Batch layout (irjax/data/cross_encoder_batches.py), b rows of groups of G = 1+n pairs, the
positive first in each group:
    pair_ids, pair_types, pair_mask   int32 [b, G, L]   `[CLS] q [SEP] d [SEP]`, types 0/1
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from irjax.models.bert import BertConfig
from irjax.models.cross_encoder import CrossEncoder
from irjax.models.dual_encoder import slice_count
from irjax.models.efficiency import EncoderEfficiency


def localized_contrastive_loss(scores: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean over groups of -log softmax(scores)[0] for scores [b, 1+n] (positive in column 0),
    with the group accuracy (positive ranked first) and the mean positive-minus-best-negative
    margin as metrics."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be [groups, 1 + negatives] with >= 1 negative, got "
                         f"shape {scores.shape}")
    scores = scores.astype(jnp.float32)
    loss = jnp.mean(jax.nn.logsumexp(scores, axis=1) - scores[:, 0])
    best_negative = jnp.max(scores[:, 1:], axis=1)
    return loss, {"accuracy": jnp.mean((scores[:, 0] > best_negative).astype(jnp.float32)),
                  "margin": jnp.mean(scores[:, 0] - best_negative)}


@dataclasses.dataclass(frozen=True)
class CrossEncoderModel:
    config: BertConfig
    dropout: bool = True
    dtype: Any = jnp.float32
    efficiency: EncoderEfficiency = EncoderEfficiency()  # attention, remat, sliced scoring

    @property
    def module(self) -> CrossEncoder:
        return CrossEncoder(self.config, dtype=self.dtype, attention=self.efficiency.attention,
                            remat=self.efficiency.remat)

    # -- the TrainableModel contract -------------------------------------------------------
    def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
        ids = jnp.asarray(batch["pair_ids"])[:1, 0]
        return self.module.init(rng, ids, jnp.ones_like(ids), jnp.zeros_like(ids))["params"]

    def from_pretrained_params(self, encoder_params: Any) -> dict[str, Any]:
        """Imported BERT weights (e.g. MiniLM) as the encoder; the head keeps its fresh init."""
        return {"encoder": encoder_params}

    def scores(self, params: Any, batch: Mapping[str, jax.Array],
               rng: jax.Array | None = None) -> jax.Array:
        """Scores [b, G] of every pair of every group; dropout on when `rng` is given.

        With `efficiency.grad_cache_tokens=T` the pairs are scored in rematerialised slices of
        about T tokens (GradCache with the score as the cached "embedding": the forward keeps
        only the scores, the backward re-runs one slice at a time). Same loss and gradients with
        dropout off; activation memory of one slice, and on CPU cache-sized slices run faster."""
        b, groups, length = batch["pair_ids"].shape
        rows = b * groups
        train = rng is not None and self.dropout
        flat = tuple(batch[k].reshape(rows, length) for k in ("pair_ids", "pair_mask", "pair_types"))

        def score(p: Any, ids: jax.Array, mask: jax.Array, types: jax.Array,
                  key: jax.Array) -> jax.Array:
            return self.module.apply({"params": p}, ids, mask, types, deterministic=not train,
                                     rngs={"dropout": key} if train else None)

        key = rng if rng is not None else jax.random.key(0)
        count = slice_count(rows, length, self.efficiency.grad_cache_tokens)
        if count == 1:
            return score(params, *flat, key).reshape(b, groups)
        keys = jax.random.split(key, count)
        sliced = tuple(x.reshape(count, rows // count, length) for x in flat)
        out = jax.lax.map(lambda xs: jax.checkpoint(score)(params, *xs), (*sliced, keys))
        return out.reshape(b, groups)

    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        scores = self.scores(params, batch, rng)
        loss, metrics = localized_contrastive_loss(scores)
        return loss, {**metrics, "positive_score": jnp.mean(scores[:, 0]),
                      "contrastive_loss": loss}
