"""SPLADE as a `TrainableModel`: contrastive ranking loss plus FLOPS regularisation.

Scores are dot products of SPLADE vectors (no temperature: the vectors' scale is learned). The
contrastive loss is softmax cross-entropy of each query over every positive in the batch plus every
BM25 hard negative (the dual encoder's candidate layout and false-negative mask, see
irjax/data/pipeline.py). Regularisation, as SPLADE v2: lambda_q * FLOPS(queries) + lambda_d *
FLOPS(documents), each lambda warmed up quadratically over `lambda_warmup_steps` (the batch's
`train_step`, added by irjax/data/numbered.py; without it the full lambda applies from step 0).

`query_side='idf'` is the inference-free variant (Geng et al. 2024): only documents are encoded;
a query is its distinct WordPiece ids ([CLS], [SEP] and padding excluded) weighted by the corpus
IDF, and the documents' regulariser is the IDF-aware FLOPS (irjax/models/splade.py). The encoder
is shared by queries and documents when both are encoded (SPLADE v2), so the parameters are
always {'splade': SpladeEncoder's tree}.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from irjax.models.bert import BertConfig
from irjax.models.splade import SpladeEncoder, flops, idf_flops, lambda_schedule
from irjax.models.document_pool import document_pool

QUERY_SIDES = ("splade", "idf")
_NEG_INF = -1e9


def idf_query_vectors(ids: jax.Array, mask: jax.Array, idf: jax.Array,
                      skip_ids: tuple[int, ...]) -> jax.Array:
    """[batch, vocab]: idf[j] where token j occurs in the query (specials in `skip_ids` ignored)."""
    valid = mask.astype(bool)
    for special in skip_ids:
        valid = valid & (ids != special)
    rows = jnp.arange(ids.shape[0])[:, None]
    present = jnp.zeros((ids.shape[0], idf.shape[0]), jnp.float32).at[rows, ids].max(
        valid.astype(jnp.float32))
    return present * idf[None, :]


@dataclasses.dataclass(frozen=True)
class SpladeModel:
    config: BertConfig
    query_side: str = "splade"
    idf: Any = None                 # float32 [vocab], required by query_side='idf'
    special_ids: tuple[int, ...] = (101, 102, 0)  # [CLS], [SEP], [PAD] of BERT's vocabulary
    lambda_q: float = 3e-4
    lambda_d: float = 1e-4
    lambda_warmup_steps: int = 0
    dropout: bool = True
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        if self.query_side not in QUERY_SIDES:
            raise ValueError(f"query_side must be one of {QUERY_SIDES}, got {self.query_side!r}")
        if self.query_side == "idf":
            if self.idf is None or np.shape(self.idf) != (self.config.vocab_size,):
                raise ValueError(f"query_side='idf' needs idf of shape ({self.config.vocab_size},), "
                                 f"got {None if self.idf is None else np.shape(self.idf)}")
        if self.lambda_q < 0 or self.lambda_d < 0:
            raise ValueError(f"lambdas must be >= 0, got {self.lambda_q}, {self.lambda_d}")

    @property
    def module(self) -> SpladeEncoder:
        return SpladeEncoder(self.config, dtype=self.dtype)

    # -- the TrainableModel contract -------------------------------------------------------
    def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
        ids, mask = jnp.asarray(batch["pos_ids"])[:1], jnp.asarray(batch["pos_mask"])[:1]
        return {"splade": self.module.init(rng, ids, mask)["params"]}

    def from_pretrained_params(self, params: Any) -> dict[str, Any]:
        """Imported {'encoder', 'mlm_head'} weights (irjax/models/splade_import.py)."""
        return {"splade": params}

    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        q_rng, d_rng = jax.random.split(rng)
        b = batch["query_ids"].shape[0]
        doc_ids, doc_mask = document_pool(batch)
        docs = self.encode(params, doc_ids, doc_mask, d_rng)                 # [B*(1+n), V]
        queries = self.encode_queries(params, batch["query_ids"], batch["query_mask"], q_rng)
        scores = queries @ docs.T
        labels = batch["labels"]
        mask = batch["logit_mask"].astype(bool) if "logit_mask" in batch else jnp.ones(scores.shape, bool)
        logits = jnp.where(mask, scores, _NEG_INF)
        ce = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[jnp.arange(b), labels])
        step = batch["train_step"][0] if "train_step" in batch else jnp.asarray(self.lambda_warmup_steps)
        lam_d = lambda_schedule(step, self.lambda_d, self.lambda_warmup_steps)
        if self.query_side == "idf":
            doc_reg = idf_flops(docs, jnp.asarray(self.idf))
            query_reg = jnp.zeros((), jnp.float32)
        else:
            doc_reg = flops(docs)
            query_reg = flops(queries)
        lam_q = lambda_schedule(step, self.lambda_q, self.lambda_warmup_steps)
        total = ce + lam_d * doc_reg + lam_q * query_reg
        metrics = {
            "loss": total, "contrastive_loss": ce, "doc_flops": doc_reg, "query_flops": query_reg,
            "lambda_d": lam_d,
            "accuracy": jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)),
            "positive_score": jnp.mean(scores[jnp.arange(b), labels]),
            "doc_terms": jnp.mean(jnp.sum(docs > 0, axis=-1).astype(jnp.float32)),
            "query_terms": jnp.mean(jnp.sum(queries > 0, axis=-1).astype(jnp.float32)),
        }
        return total, metrics

    # -- pieces ------------------------------------------------------------------------------
    def encode(self, params: Any, ids: jax.Array, mask: jax.Array,
               rng: jax.Array | None = None) -> jax.Array:
        """SPLADE vectors [rows, vocab]; dropout when training (rng given and dropout on)."""
        train = rng is not None and self.dropout
        return self.module.apply({"params": params["splade"]}, ids, mask, deterministic=not train,
                                 rngs={"dropout": rng} if train else None)

    def encode_queries(self, params: Any, ids: jax.Array, mask: jax.Array,
                       rng: jax.Array | None = None) -> jax.Array:
        if self.query_side == "idf":
            return idf_query_vectors(ids, mask, jnp.asarray(self.idf), self.special_ids)
        return self.encode(params, ids, mask, rng)
