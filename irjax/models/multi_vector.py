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

ColBERTer's reductions are options of the same model (`irjax.models.word_pooling`):
`pooling='word'` scores one mean-pooled vector per whole word instead of one per WordPiece token
(queries and documents; special tokens belong to no word), and `gate=True` multiplies each
document word's vector by a learned gate >= 0, with `gate_l1` times the mean gate added to the
loss. A word whose gate is 0 takes no part in scoring, in training as in the index, so removing it
from the index changes no score.

Top-k selection uses a threshold at the k-th largest similarity (`sim >= kth`), which avoids a
[.., k, tokens] one-hot; on exact ties at the threshold more than k tokens are kept.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from irjax.models.bert import BertConfig
from irjax.models.token_encoder import DEFAULT_DIM, TokenEncoderModule, token_mask
from irjax.models.word_pooling import WordGate, gate_penalty, word_ids
from irjax.models.document_pool import document_pool

OBJECTIVES = ("xtr", "colbert")
POOLINGS = ("token", "word")
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
    pooling: str = "token"               # 'word': one mean-pooled vector per whole word
    continuation_ids: tuple[int, ...] = ()  # pieces that continue a word (tokenizer's '##...')
    special_ids: tuple[int, ...] = ()    # [CLS], [SEP], [PAD]: in no word
    gate: bool = False                   # learned keep/drop gate per document vector
    gate_l1: float = 0.0                 # weight of the mean gate (L1) in the loss
    gate_scale: float = 1000.0           # WordGate.scale: the gate head's speed-up
    gate_threshold: float = 0.0          # at indexing, vectors with gate <= this are not stored

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.pooling == "word" and not (self.continuation_ids and self.special_ids):
            raise ValueError("pooling='word' needs continuation_ids and special_ids from the "
                             "tokenizer (WordPieceTokenizer.continuation_ids / .special_ids)")
        if self.gate_l1 < 0 or self.gate_threshold < 0 or self.gate_scale <= 0:
            raise ValueError(f"gate_l1={self.gate_l1} and gate_threshold={self.gate_threshold} "
                             f"must be >= 0 and gate_scale={self.gate_scale} > 0")
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
        params = {"encoder": self.module.init(rng, ids, mask)["params"]}
        if self.gate:   # deterministic init (every gate 1), so the rng is not split
            vectors = jnp.zeros((1, ids.shape[1], self.dim), jnp.float32)
            params["gate"] = WordGate(self.gate_scale).init(rng, vectors)["params"]
        return params

    def from_pretrained_params(self, bert_params: Any) -> dict[str, Any]:
        """Imported BERT/MiniLM weights placed under the backbone, and nothing else.

        The tree is partial on purpose: the trainer merges it into a fresh `init_variables`
        (`irjax.training.train_state.merge_params`), so the projection keeps its random init.
        """
        return {"encoder": {"backbone": bert_params}}

    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        scores, docs = self._scores(params, batch, rng)
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
        loss = ce
        if docs.gates is not None:
            penalty = gate_penalty(docs.gates, docs.vectors_mask)
            loss = ce + self.gate_l1 * penalty
            metrics.update(loss=loss, gate_penalty=penalty, kept_fraction=jnp.sum(docs.keep)
                           / jnp.maximum(jnp.sum(docs.vectors_mask), 1.0))
        return loss, metrics

    # -- pieces ------------------------------------------------------------------------------
    def encode(self, params: Any, ids: jax.Array, mask: jax.Array,
               rng: jax.Array | None = None, words: jax.Array | None = None) -> jax.Array:
        """Unit token vectors [rows, L, dim] (word vectors when `words` gives word ids);
        dropout is active when rng is given and dropout on."""
        train = rng is not None and self.dropout
        return self.module.apply({"params": params["encoder"]}, ids, mask, deterministic=not train,
                                 word_ids=words, rngs={"dropout": rng} if train else None)

    def represent(self, params: Any, ids: jax.Array, mask: jax.Array, skip_ids: Sequence[int] = (),
                  document: bool = False, rng: jax.Array | None = None,
                  threshold: float = 0.0) -> "Represented":
        """The vectors a text is scored with, under the model's pooling and gate.

        Tokens (or words) in `skip_ids` and padding drop out; documents are gated when the
        model has a gate, and then only vectors with gate > `threshold` are kept (0 in
        training: exactly the words an index built with the default threshold stores)."""
        if self.pooling == "word":
            words = word_ids(ids, token_mask(ids, mask, (*skip_ids, *self.special_ids)),
                             self.continuation_ids)
            vectors = self.encode(params, ids, mask, rng, words)
            length = ids.shape[1]
            present = (jnp.arange(length)[None, :] <= jnp.max(words, axis=1, keepdims=True))
            vectors_mask = present.astype(jnp.float32)
        else:
            vectors = self.encode(params, ids, mask, rng)
            vectors_mask = token_mask(ids, mask, skip_ids)
        if not (self.gate and document):
            return Represented(vectors, vectors_mask, vectors_mask, None)
        gates = WordGate(self.gate_scale).apply({"params": params["gate"]}, vectors)
        keep = vectors_mask * (gates > threshold).astype(jnp.float32)
        return Represented(vectors * gates[..., None].astype(vectors.dtype), keep, vectors_mask,
                           gates)

    def candidates(self, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Document ids and masks of the pool: [B positives, then B*n negatives row-major]."""
        return document_pool(batch)

    def scores(self, params: Any, batch: Mapping[str, jax.Array],
               rng: jax.Array | None = None) -> jax.Array:
        """[B, pool] scores of every query against every candidate under the model's objective."""
        return self._scores(params, batch, rng)[0]

    def _scores(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array | None
                ) -> tuple[jax.Array, "Represented"]:
        q_rng, d_rng = jax.random.split(rng) if rng is not None else (None, None)
        d_ids, d_mask = self.candidates(batch)
        q = self.represent(params, batch["query_ids"], batch["query_mask"], rng=q_rng)
        d = self.represent(params, d_ids, d_mask, self.doc_skip_ids, document=True, rng=d_rng)
        if self.objective == "xtr":
            return xtr_scores(q.vectors, q.keep, d.vectors, d.keep, self.k_train), d
        return maxsim_scores(q.vectors, q.keep, d.vectors, d.keep), d


class Represented(NamedTuple):
    """`MultiVectorModel.represent`'s output: vectors [b, L, dim] (gated on documents), keep
    [b, L] (0/1: scored and stored), vectors_mask [b, L] (every real token or word, before the
    gate) and gates [b, L] (None without a gate)."""

    vectors: jax.Array
    keep: jax.Array
    vectors_mask: jax.Array
    gates: jax.Array | None
