"""The dual encoder as a `TrainableModel`: contrastive and margin-MSE objectives.

Scores are dot products of L2-normalised embeddings (cosine). The contrastive loss is softmax
cross-entropy of each query over a candidate pool of every positive in the batch plus every hard
negative, divided by a temperature (sentence-transformers' MultipleNegativesRankingLoss uses
scale 20 = 1 / 0.05). Because the batch arrays are global (sharded over 'data'), the pool is the
*global* batch: XLA all-gathers the document embeddings across devices, which is what t5x_retrieval
does by hand on pods. `negatives='local'` restricts each query to the candidates of its own data
shard, to measure what cross-device negatives buy.

GradCache (Gao et al. 2021), `efficiency.grad_cache_tokens=T`: each tower embeds its rows in slices
of about T tokens, and each slice is rematerialised (`jax.checkpoint`), so the forward pass keeps
only the embeddings, the loss is taken over the whole batch, and the backward pass re-runs one
slice at a time with that slice's embedding gradients -- the same loss and gradients as the plain
step (with dropout off; with dropout on, every slice draws its own mask), activation memory of one
slice, and on CPU the cache-sized slices that make encoding fast (`CPU_MICRO_BATCH_TOKENS`).

Candidate layout (see irjax/data/pipeline.py): [B positives, then B*n negatives row-major];
`logit_mask` removes false negatives (another row's document that is also relevant to this query).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.dual_encoder import POOLING, encode_batch, slice_count
from irjax.models.efficiency import EncoderEfficiency
from irjax.models.document_pool import document_pool

OBJECTIVES = ("contrastive", "margin_mse", "contrastive+margin_mse")
NEGATIVES = ("global", "local")
_NEG_INF = -1e9


@dataclasses.dataclass(frozen=True)
class DualEncoderModel:
    config: BertConfig
    temperature: float = 0.05
    shared_towers: bool = True
    pooling: str = "mean"
    objective: str = "contrastive"
    margin_mse_weight: float = 1.0
    negatives: str = "global"          # 'global' (cross-device) or 'local' (own data shard only)
    data_shards: int = 1               # rows per shard = B / data_shards, used by negatives='local'
    dropout: bool = True
    dtype: Any = jnp.float32
    efficiency: EncoderEfficiency = EncoderEfficiency()  # attention, remat, GradCache switches

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be 'global' or 'local', got {self.negatives!r}")
        if self.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {sorted(POOLING)}, got {self.pooling!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def module(self) -> BertEncoder:
        return BertEncoder(self.config, dtype=self.dtype, attention=self.efficiency.attention,
                           remat=self.efficiency.remat)

    @property
    def towers(self) -> tuple[str, ...]:
        return ("encoder",) if self.shared_towers else ("query_encoder", "doc_encoder")

    # -- the TrainableModel contract -------------------------------------------------------
    def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
        ids = jnp.asarray(batch["pos_ids"])[:1]
        mask = jnp.asarray(batch["pos_mask"])[:1]
        rngs = jax.random.split(rng, len(self.towers))
        return {name: self.module.init(r, ids, mask)["params"] for name, r in zip(self.towers, rngs)}

    def from_pretrained_params(self, params: Any) -> dict[str, Any]:
        """Imported encoder weights (e.g. MiniLM) placed into every tower."""
        return {name: params for name in self.towers}

    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        q_rng, d_rng = jax.random.split(rng)
        queries = self.embed(params, "query", batch["query_ids"], batch["query_mask"], q_rng)
        b = queries.shape[0]
        n = batch["neg_ids"].shape[1] if "neg_ids" in batch else 0
        doc_ids, doc_mask = document_pool(batch)
        docs = self.embed(params, "doc", doc_ids, doc_mask, d_rng)   # [B*(1+n), d]
        scores = queries @ docs.T                                       # [B, B*(1+n)] cosine
        labels = batch["labels"]
        metrics: dict[str, jax.Array] = {
            "positive_score": jnp.mean(scores[jnp.arange(b), labels]),
        }
        total = jnp.zeros((), jnp.float32)
        if "contrastive" in self.objective:
            logits = jnp.where(self._candidate_mask(batch, b, n), scores / self.temperature, _NEG_INF)
            log_z = jax.nn.logsumexp(logits, axis=-1)
            ce = jnp.mean(log_z - logits[jnp.arange(b), labels])
            metrics["contrastive_loss"] = ce
            metrics["accuracy"] = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
            total = total + ce
        if "margin_mse" in self.objective:
            if not n or "teacher_pos" not in batch:
                raise ValueError("margin_mse needs hard negatives and teacher scores in the batch "
                                 "(num_hard_negatives > 0 and a teacher score file)")
            pos = scores[jnp.arange(b), labels]
            neg = jnp.stack([scores[jnp.arange(b), b + jnp.arange(b) * n + j] for j in range(n)], axis=1)
            student = pos[:, None] - neg
            teacher = batch["teacher_pos"][:, None] - batch["teacher_neg"]
            mse = jnp.mean(jnp.square(student - teacher))
            metrics["margin_mse"] = mse
            total = total + self.margin_mse_weight * mse
        metrics["loss"] = total
        return total, metrics

    # -- pieces ------------------------------------------------------------------------------
    def tower(self, params: Any, side: str) -> Any:
        if self.shared_towers:
            return params["encoder"]
        return params["query_encoder" if side == "query" else "doc_encoder"]

    def embed(self, params: Any, side: str, ids: jax.Array, mask: jax.Array,
              rng: jax.Array | None = None) -> jax.Array:
        """Unit vectors [rows, d]; dropout is active when training (rng given and dropout on).
        With `grad_cache_tokens`, rematerialised slices (GradCache; see the module docstring)."""
        train = rng is not None and self.dropout
        tower = self.tower(params, side)
        if self.efficiency.grad_cache_tokens is None:
            return encode_batch(self.module, tower, ids, mask, self.pooling,
                                deterministic=not train, rngs={"dropout": rng} if train else None)

        @jax.checkpoint
        def encode_slice(p: Any, ids: jax.Array, mask: jax.Array, key: jax.Array) -> jax.Array:
            return encode_batch(self.module, p, ids, mask, self.pooling, deterministic=not train,
                                rngs={"dropout": key} if train else None)

        rows, length = ids.shape
        # Slices cut every data shard's rows alike (slice i = the i-th rows of each shard), so each
        # slice still spans all devices: data parallelism is kept inside every slice.
        shards = self.data_shards if rows % self.data_shards == 0 else 1
        count = slice_count(rows // shards, length, self.efficiency.grad_cache_tokens)
        keys = jax.random.split(rng if rng is not None else jax.random.key(0), count)
        if count == 1:
            return encode_slice(tower, ids, mask, keys[0])

        def to_slices(x: jax.Array) -> jax.Array:  # [rows, L] -> [count, rows / count, L]
            x = x.reshape(shards, count, rows // shards // count, length)
            return jnp.swapaxes(x, 0, 1).reshape(count, rows // count, length)

        out = jax.lax.map(lambda xs: encode_slice(tower, *xs), (to_slices(ids), to_slices(mask), keys))
        out = jnp.swapaxes(out.reshape(count, shards, rows // shards // count, -1), 0, 1)
        return out.reshape(rows, -1)

    def _candidate_mask(self, batch: Mapping[str, jax.Array], b: int, n: int) -> jax.Array:
        mask = batch["logit_mask"].astype(bool) if "logit_mask" in batch else jnp.ones((b, b * (1 + n)), bool)
        if self.negatives == "local":
            if b % self.data_shards:
                raise ValueError(f"global batch {b} is not divisible by data_shards={self.data_shards}")
            rows = b // self.data_shards
            owner = np.concatenate([np.arange(b), b + np.arange(b * n)])
            owner = np.where(owner < b, owner, (owner - b) // max(n, 1))
            same = (np.arange(b)[:, None] // rows) == (owner[None, :] // rows)
            mask = mask & jnp.asarray(same)
        return mask
