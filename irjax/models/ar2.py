"""AR2 (Zhang et al. 2022, "Adversarial Retriever-Ranker for Dense Text Retrieval") as one
`TrainableModel`: a dual-encoder retriever and a cross-encoder ranker trained against each other.

Each row of a batch is a query with a group of candidates: its positive and n negatives the
retriever itself retrieved (re-mined every few hundred steps by the job, irjax/jobs/train_ar2.py).
The two players' losses on that group:

* ranker: localized contrastive estimation, -log softmax(ranker scores)[positive], so it learns
  to pick the positive out of exactly the documents the current retriever confuses with it;
* retriever: the dual encoder's own contrastive loss (in-batch positives + every row's
  negatives, as `DualEncoderModel`), plus `kl_weight` x KL(p_ranker || p_retriever) over the
  group, where p = softmax of each player's group scores (the retriever's divided by its
  temperature) and the ranker's distribution is a fixed target (stop_gradient): the retriever
  moves its probability mass to where the stronger ranker puts it.

Both players update in every step against the other's current state (the ranker's target is
detached, and the ranker's loss does not see the retriever), which is the alternating game with
alternation period one step; the negatives alternate on the job's re-indexing interval.
Memory: with the retriever's `efficiency.grad_cache_tokens` set, the retriever embeds in GradCache
slices and the ranker scores its pairs the same way (rematerialised slices of about that many
tokens, `jax.lax.map`), so a step keeps the activations of one slice, not of every pair of the
batch: the same loss and gradients with dropout off.
Batch layout: the dual encoder's (irjax/data/pipeline.py) plus the groups as joined pairs,
`pair_ids`, `pair_types`, `pair_mask` int32 [b, 1+n, Lp], positive first (irjax/data/ar2_batches.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from irjax.models.cross_encoder_training import CrossEncoderModel, localized_contrastive_loss
from irjax.models.dual_encoder import slice_count
from irjax.models.dual_encoder_training import _NEG_INF, DualEncoderModel
from irjax.models.document_pool import document_pool


def ar2_retriever_loss(retriever_logits: jax.Array, ranker_scores: jax.Array
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean over rows of KL(p_ranker || p_retriever) for group logits [b, G] (the retriever's
    already divided by its temperature); the ranker's side gets no gradient."""
    target = jax.nn.softmax(jax.lax.stop_gradient(ranker_scores.astype(jnp.float32)), axis=-1)
    log_target = jax.nn.log_softmax(jax.lax.stop_gradient(ranker_scores.astype(jnp.float32)),
                                    axis=-1)
    log_student = jax.nn.log_softmax(retriever_logits.astype(jnp.float32), axis=-1)
    kl = jnp.mean(jnp.sum(target * (log_target - log_student), axis=-1))
    agree = jnp.argmax(retriever_logits, axis=-1) == jnp.argmax(ranker_scores, axis=-1)
    return kl, {"kl": kl, "top1_agreement": jnp.mean(agree.astype(jnp.float32))}


@dataclasses.dataclass(frozen=True)
class AR2Model:
    retriever: DualEncoderModel
    ranker: CrossEncoderModel
    kl_weight: float = 1.0
    ranker_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.retriever.objective != "contrastive":
            raise ValueError("AR2's retriever trains with the contrastive objective (plus the KL "
                             f"to the ranker), got objective={self.retriever.objective!r}")
        if self.kl_weight < 0 or self.ranker_weight < 0:
            raise ValueError(f"kl_weight={self.kl_weight} and ranker_weight="
                             f"{self.ranker_weight} must be >= 0")

    def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
        r_rng, k_rng = jax.random.split(rng)
        return {"retriever": self.retriever.init_variables(r_rng, batch),
                "ranker": self.ranker.init_variables(k_rng, batch)}

    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        q_rng, d_rng, k_rng = jax.random.split(rng, 3)
        de, retriever = self.retriever, params["retriever"]
        queries = de.embed(retriever, "query", batch["query_ids"], batch["query_mask"], q_rng)
        b, n, _ = batch["neg_ids"].shape
        doc_ids, doc_mask = document_pool(batch)
        docs = de.embed(retriever, "doc", doc_ids, doc_mask, d_rng)      # [B(1+n), d]
        logits = queries @ docs.T / de.temperature                        # [B, B(1+n)]
        labels = batch["labels"]
        masked = jnp.where(batch["logit_mask"].astype(bool), logits, _NEG_INF)
        contrastive = jnp.mean(jax.nn.logsumexp(masked, axis=-1) - masked[jnp.arange(b), labels])
        # each row's own group: its positive (column = label), then its n negatives
        negatives = b + labels[:, None] * n + jnp.arange(n)[None, :]
        group = jnp.take_along_axis(logits, jnp.concatenate([labels[:, None], negatives], 1), 1)
        ranker_scores = self.ranker_scores(params["ranker"], batch, k_rng)  # [b, 1+n]
        lce, ranker_metrics = localized_contrastive_loss(ranker_scores)
        kl, kl_metrics = ar2_retriever_loss(group, ranker_scores)
        total = contrastive + self.kl_weight * kl + self.ranker_weight * lce
        retriever_accuracy = jnp.mean((jnp.argmax(masked, -1) == labels).astype(jnp.float32))
        return total, {"loss": total, "contrastive_loss": contrastive, "ranker_loss": lce,
                       "ranker_accuracy": ranker_metrics["accuracy"],
                       "retriever_accuracy": retriever_accuracy, **kl_metrics}

    def ranker_scores(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
                      ) -> jax.Array:
        """[b, 1+n] ranker scores of every group; in rematerialised slices under GradCache."""
        tokens = self.retriever.efficiency.grad_cache_tokens
        if tokens is None:
            return self.ranker.scores(params, batch, rng)
        b, groups, length = batch["pair_ids"].shape
        rows = b * groups
        # as the retriever's slices: slice i holds the i-th rows of every data shard
        shards = self.retriever.data_shards if rows % self.retriever.data_shards == 0 else 1
        count = slice_count(rows // shards, length, tokens)
        train = self.ranker.dropout
        module = self.ranker.module

        @jax.checkpoint
        def score_slice(p: Any, ids: jax.Array, mask: jax.Array, types: jax.Array,
                        key: jax.Array) -> jax.Array:
            return module.apply({"params": p}, ids, mask, types, deterministic=not train,
                                rngs={"dropout": key} if train else None)

        def to_slices(x: jax.Array) -> jax.Array:  # [b, G, L] -> [count, rows / count, L]
            x = x.reshape(shards, count, rows // shards // count, length)
            return jnp.swapaxes(x, 0, 1).reshape(count, rows // count, length)

        keys = jax.random.split(rng, count)
        sliced = tuple(to_slices(batch[k]) for k in ("pair_ids", "pair_mask", "pair_types"))
        out = jax.lax.map(lambda xs: score_slice(params, *xs), (*sliced, keys))
        out = jnp.swapaxes(out.reshape(count, shards, rows // shards // count), 0, 1)
        return out.reshape(b, groups)
