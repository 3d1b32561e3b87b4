"""JPQ (Zhan et al. 2021, "Jointly Optimizing Query Encoder and Product Quantization to Improve
Retrieval Performance") as a `TrainableModel`.

Documents are PQ codes, computed once by faiss from a dual encoder's document vectors and never
changed: there is no document tower here, and the codes arrive in the batch as integers, so no
gradient can reach them. What trains is the query tower and the centroid embeddings
[m, 256, d/m]: each candidate document is its reconstruction, the centroids gathered by its
codes, and the loss is the dual encoder's softmax cross-entropy of each query over the batch's
candidates [B positives, then B*n hard negatives row-major] against those reconstructions. So
training optimises exactly the score the PQ index searches with (inner product of the float query
with each code's reconstruction: irjax/index/pq_codes.py).

Batch: query_ids/query_mask [b, Lq], pos_codes [b, m] and neg_codes [b, n, m] (int32), labels
[b] and logit_mask [b, B*(1+n)] as in irjax/data/pipeline.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.dual_encoder import POOLING, encode_batch

CODEBOOK_SIZE = 256
_NEG_INF = -1e9


def reconstruct(centroids: jax.Array, codes: jax.Array) -> jax.Array:
    """[rows, m * dsub] reconstructions of integer codes [rows, m] from centroids [m, 256, dsub]."""
    m = centroids.shape[0]
    gathered = centroids[jnp.arange(m)[None, :], codes]  # [rows, m, dsub]
    return gathered.reshape(codes.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class JPQModel:
    config: BertConfig
    pq_subspaces: int = 48
    temperature: float = 0.05
    pooling: str = "mean"
    dropout: bool = True

    def __post_init__(self) -> None:
        if self.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {sorted(POOLING)}, got {self.pooling!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.pq_subspaces < 1 or self.config.hidden_size % self.pq_subspaces:
            raise ValueError(f"pq_subspaces={self.pq_subspaces} must divide the embedding size "
                             f"{self.config.hidden_size}")

    @property
    def module(self) -> BertEncoder:
        return BertEncoder(self.config)

    @property
    def centroid_shape(self) -> tuple[int, int, int]:
        m = self.pq_subspaces
        return (m, CODEBOOK_SIZE, self.config.hidden_size // m)

    def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Query tower and centroids; the job imports the real ones (encoder, faiss) over these."""
        ids = jnp.asarray(batch["query_ids"])[:1]
        mask = jnp.asarray(batch["query_mask"])[:1]
        return {"query_encoder": self.module.init(rng, ids, mask)["params"],
                "centroids": jnp.zeros(self.centroid_shape, jnp.float32)}

    def embed_queries(self, params: Any, ids: jax.Array, mask: jax.Array,
                      rng: jax.Array | None = None) -> jax.Array:
        """Unit query vectors [rows, d]; dropout when training (rng given and dropout on)."""
        train = rng is not None and self.dropout
        return encode_batch(self.module, params["query_encoder"], ids, mask, self.pooling,
                            deterministic=not train, rngs={"dropout": rng} if train else None)

    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        queries = self.embed_queries(params, batch["query_ids"], batch["query_mask"], rng)
        b = queries.shape[0]
        codes = batch["pos_codes"]
        if "neg_codes" in batch:
            codes = jnp.concatenate([codes, batch["neg_codes"].reshape(-1, codes.shape[-1])])
        docs = reconstruct(params["centroids"], codes)          # [B*(1+n), d]
        scores = queries @ docs.T
        labels = batch["labels"]
        mask = batch["logit_mask"].astype(bool) if "logit_mask" in batch else None
        logits = scores / self.temperature
        if mask is not None:
            logits = jnp.where(mask, logits, _NEG_INF)
        ce = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[jnp.arange(b), labels])
        metrics = {"contrastive_loss": ce,
                   "accuracy": jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)),
                   "positive_score": jnp.mean(scores[jnp.arange(b), labels])}
        return ce, metrics
