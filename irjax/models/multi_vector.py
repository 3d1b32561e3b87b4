"""Multi-vector retrieval scores (ColBERT MaxSim, XTR) and the XTR/ColBERT `TrainableModel`.

ColBERT scores a (query, document) pair by MaxSim: every query token takes its best-matching
document token, and the per-token maxima are summed. Here the sum is averaged over the real
query tokens, as in XTR's formulation, so scores of queries of different lengths are comparable
and stay in [-1, 1] for unit vectors.

XTR (Lee et al. 2023, "Rethinking the Role of Token Retrieval in Multi-Vector Retrieval") trains
the model so that the tokens it would *retrieve* are enough to score a document: during training
each query token keeps only its top-k_train similarities over every document token in the batch
(all candidates pooled), everything else is zeroed, and a document's score is the sum over query
tokens of the max kept similarity among its tokens, divided by Z, the number of query tokens that
retrieved at least one of its tokens. A document no query token retrieved scores 0 (Z=0 guard).

Top-k selection uses a threshold at the k-th largest similarity (`sim >= kth`), which avoids a
[.., k, tokens] one-hot; on exact ties at the threshold more than k tokens are kept.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from irjax.models.bert import BertConfig
from irjax.models.token_encoder import DEFAULT_DIM, TokenEncoderModule, token_mask

OBJECTIVES = ("xtr", "colbert")
_NEG_INF = -1e9


def _similarities(q: jax.Array, d: jax.Array) -> jax.Array:
    """[bq, Lq, dim] x [bd, Ld, dim] -> [bq, bd, Lq, Ld] token dot products in float32."""
    return jnp.einsum("qid,pjd->qpij", q.astype(jnp.float32), d.astype(jnp.float32))


def _max_over_doc_tokens(sim: jax.Array, d_valid: jax.Array) -> jax.Array:
    """Max over each document's real tokens -> [bq, bd, Lq]; an all-padding document gives 0."""
    valid = d_valid[None, :, None, :]
    best = jnp.max(jnp.where(valid, sim, -jnp.inf), axis=-1)
    return jnp.where(jnp.any(valid, axis=-1), best, 0.0)


def maxsim_scores(q: jax.Array, q_mask: jax.Array, d: jax.Array, d_mask: jax.Array) -> jax.Array:
    """ColBERT scores [bq, bd]: mean over real query tokens of the max over real doc tokens."""
    q_valid = q_mask > 0
    best = _max_over_doc_tokens(_similarities(q, d), d_mask > 0)        # [bq, bd, Lq]
    total = jnp.sum(jnp.where(q_valid[:, None, :], best, 0.0), axis=-1)
    count = jnp.maximum(jnp.sum(q_valid, axis=-1), 1).astype(jnp.float32)
    return total / count[:, None]


def xtr_retrieved(sim: jax.Array, d_valid: jax.Array, k_train: int) -> jax.Array:
    """Bool [bq, bd, Lq, Ld]: whether a query token's top-k over all in-batch doc tokens has it.

    Padding doc tokens are never retrieved; k larger than the number of doc tokens keeps all.
    """
    bq, bd, lq, ld = sim.shape
    valid = jnp.broadcast_to(d_valid[None, :, None, :], sim.shape)
    pooled = jnp.where(valid, sim, -jnp.inf).transpose(0, 2, 1, 3).reshape(bq, lq, bd * ld)
    k = max(1, min(int(k_train), bd * ld))
    kth = lax.top_k(lax.stop_gradient(pooled), k)[0][..., k - 1]        # [bq, Lq]
    return (sim >= kth[:, None, :, None]) & valid


def xtr_scores(q: jax.Array, q_mask: jax.Array, d: jax.Array, d_mask: jax.Array,
               k_train: int) -> jax.Array:
    """XTR training scores [bq, bd] (see the module docstring); the candidates are all of `d`."""
    if k_train < 1:
        raise ValueError(f"k_train must be >= 1, got {k_train}")
    sim = _similarities(q, d)
    d_valid = d_mask > 0
    kept = xtr_retrieved(sim, d_valid, k_train)
    best = _max_over_doc_tokens(jnp.where(kept, sim, 0.0), d_valid)     # [bq, bd, Lq]
    q_valid = (q_mask > 0)[:, None, :]
    total = jnp.sum(jnp.where(q_valid, best, 0.0), axis=-1)
    z = jnp.sum(jnp.any(kept, axis=-1) & q_valid, axis=-1).astype(jnp.float32)
    return total / jnp.maximum(z, 1.0)                                  # Z=0 implies total=0


@dataclasses.dataclass(frozen=True)
class MultiVectorModel:
    """A shared token encoder trained with in-batch softmax over XTR or ColBERT scores.

    Batch layout as `DualEncoderModel`: query_ids/query_mask [B, Lq], pos_ids/pos_mask [B, Ld],
    labels [B], optional neg_ids/neg_mask [B, n, Ld] appended after the positives, and an
    optional logit_mask [B, B*(1+n)] removing false negatives. XTR's top-k runs over the tokens
    of this whole candidate pool, which is what makes in-batch documents compete for retrieval.
    """

    config: BertConfig
    dim: int = DEFAULT_DIM
    objective: str = "xtr"
    k_train: int = 128
    temperature: float = 0.05
    doc_skip_ids: tuple[int, ...] = ()   # e.g. punctuation ids, dropped from document tokens
    dropout: bool = True
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.k_train < 1:
            raise ValueError(f"k_train must be >= 1, got {self.k_train}")

    @property
    def module(self) -> TokenEncoderModule:
        return TokenEncoderModule(self.config, self.dim, dtype=self.dtype)

    # -- the TrainableModel contract -------------------------------------------------------
    def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
        ids = jnp.asarray(batch["pos_ids"])[:1]
        mask = jnp.asarray(batch["pos_mask"])[:1]
        return {"encoder": self.module.init(rng, ids, mask)["params"]}

    def from_pretrained_params(self, bert_params: Any) -> dict[str, Any]:
        """Imported BERT/MiniLM weights placed under the backbone, and nothing else.

        The tree is partial on purpose: the trainer merges it into a fresh `init_variables`
        (`irjax.training.train_state.merge_params`), so the projection keeps its random init.
        """
        return {"encoder": {"backbone": bert_params}}

    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        scores = self.scores(params, batch, rng)
        b = scores.shape[0]
        labels = batch["labels"]
        mask = batch["logit_mask"].astype(bool) if "logit_mask" in batch else jnp.ones(scores.shape, bool)
        logits = jnp.where(mask, scores / self.temperature, _NEG_INF)
        target = logits[jnp.arange(b), labels]
        ce = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - target)
        metrics = {
            "loss": ce,
            "contrastive_loss": ce,
            "positive_score": jnp.mean(scores[jnp.arange(b), labels]),
            "accuracy": jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)),
        }
        return ce, metrics

    # -- pieces ------------------------------------------------------------------------------
    def encode(self, params: Any, ids: jax.Array, mask: jax.Array,
               rng: jax.Array | None = None) -> jax.Array:
        """Unit token vectors [rows, L, dim]; dropout is active when rng is given and dropout on."""
        train = rng is not None and self.dropout
        return self.module.apply({"params": params["encoder"]}, ids, mask, deterministic=not train,
                                 rngs={"dropout": rng} if train else None)

    def candidates(self, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Document ids and masks of the pool: [B positives, then B*n negatives row-major]."""
        ids, mask = batch["pos_ids"], batch["pos_mask"]
        if "neg_ids" in batch:
            length = ids.shape[-1]
            ids = jnp.concatenate([ids, batch["neg_ids"].reshape(-1, length)])
            mask = jnp.concatenate([mask, batch["neg_mask"].reshape(-1, length)])
        return ids, mask

    def scores(self, params: Any, batch: Mapping[str, jax.Array],
               rng: jax.Array | None = None) -> jax.Array:
        """[B, pool] scores of every query against every candidate under the model's objective."""
        q_rng, d_rng = jax.random.split(rng) if rng is not None else (None, None)
        q_ids, q_mask = batch["query_ids"], batch["query_mask"]
        d_ids, d_mask = self.candidates(batch)
        q = self.encode(params, q_ids, q_mask, q_rng)
        d = self.encode(params, d_ids, d_mask, d_rng)
        qm = token_mask(q_ids, q_mask)
        dm = token_mask(d_ids, d_mask, self.doc_skip_ids)
        if self.objective == "xtr":
            return xtr_scores(q, qm, d, dm, self.k_train)
        return maxsim_scores(q, qm, d, dm)
