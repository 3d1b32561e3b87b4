"""Recurrent binarisation of float embeddings (BEBR: Gan et al. 2023, "Binary Embedding-based
Retrieval at Tencent") as a `TrainableModel`.

The dual encoder stays frozen; its float vectors x [d] are the input. Round r (of R) maps the
residual the previous rounds left to u sign bits and decodes them (irjax/index/bebr_index.py has
the same forward pass in numpy, which search runs):

    h_r = (x - rec_r) @ enc_w[r] + enc_b[r];   b_r = sign(h_r)
    rec_{r+1} = rec_r + b_r @ dec_w[r] + dec_b[r]

sign has no gradient, so training uses a straight-through estimator: forward sign(h), backward
the gradient of clip(h, -1, 1) (hard tanh). Later rounds thus spend their bits on what earlier
rounds got wrong. The similarity of two codes is symmetric and bit-level, what Hamming search
computes: s(a, b) = sum_r w_r <b_r(a), b_r(b)> / u with learned round weights w_r > 0
(softplus), i.e. sum_r w_r (1 - 2 hamming_r / u).

Objective (on embeddings, queries vs documents): softmax cross-entropy of each query's code over
the batch's document codes [B positives, then B*n hard negatives], as the dual encoder's
contrastive loss, plus `reconstruction_weight` * the mean squared residual ||x - rec_R||^2 of
every row, which keeps the decoders, and so the residuals each round binarises, meaningful, plus
`distill_weight` * the cross-entropy of the code logits against the softmax of the float
vectors' own scores over the same candidates (the codes keep the float ranking, not only the
judged positive), plus `corpus_weight` * the same distillation among `corpus_vectors` [b, c, d]
(c random corpus rows per batch row, b * c in all): each row's codes must rank the other rows as its float vector does. The
judged pairs are few (809 SciFact queries) and cover little of the corpus; without this term the
codes fit them and lose the geometry of the rest, and with it recall.

Batch: query_vectors [b, d], pos_vectors [b, d], neg_vectors [b, n, d] (float32), labels [b],
logit_mask [b, B*(1+n)] (irjax/data/pipeline.py's layout); optionally corpus_vectors [b, c, d].
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

_NEG_INF = -1e9


def sign_ste(h: jax.Array) -> jax.Array:
    """+1 where h > 0 else -1; gradient of clip(h, -1, 1) (straight-through estimator)."""
    soft = jnp.clip(h, -1.0, 1.0)
    return soft + jax.lax.stop_gradient(jnp.where(h > 0, 1.0, -1.0) - soft)


@dataclasses.dataclass(frozen=True)
class BEBRModel:
    dim: int
    rounds: int = 4
    bits_per_round: int = 128
    temperature: float = 0.05
    reconstruction_weight: float = 1.0
    distill_weight: float = 0.0
    corpus_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.rounds < 1 or self.bits_per_round < 8 or self.bits_per_round % 8:
            raise ValueError(f"BEBR needs dim >= 1, rounds >= 1 and bits_per_round a positive "
                             f"multiple of 8; got {self.dim}, {self.rounds}, {self.bits_per_round}")
        weights = (self.reconstruction_weight, self.distill_weight, self.corpus_weight)
        if self.temperature <= 0 or min(weights) < 0:
            raise ValueError(f"temperature must be > 0 and the loss weights >= 0, got "
                             f"{self.temperature} and {weights}")

    @property
    def bytes_per_doc(self) -> int:
        return self.rounds * self.bits_per_round // 8

    def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Random hyperplanes (h ~ N(0, 1) for unit inputs: the straight-through estimator's
        linear range), small decoders, equal round weights."""
        del batch
        r, d, u = self.rounds, self.dim, self.bits_per_round
        k_enc, k_dec = jax.random.split(rng)
        start = math.log(math.expm1(1.0 / r))  # softplus^-1(1 / R): weights start summing to 1
        return {"enc_w": jax.random.normal(k_enc, (r, d, u)),
                "enc_b": jnp.zeros((r, u)),
                "dec_w": jax.random.normal(k_dec, (r, u, d)) / math.sqrt(u * d),
                "dec_b": jnp.zeros((r, d)),
                "round_logits": jnp.full((r,), start)}

    def binarize(self, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(signs [R, rows, u] in {-1, +1} with straight-through gradients, reconstruction)."""
        reconstruction = jnp.zeros_like(x)
        signs = []
        for r in range(self.rounds):
            h = (x - reconstruction) @ params["enc_w"][r] + params["enc_b"][r]
            s = sign_ste(h)
            reconstruction = reconstruction + s @ params["dec_w"][r] + params["dec_b"][r]
            signs.append(s)
        return jnp.stack(signs), reconstruction

    def similarity(self, params: Any, a: jax.Array, b: jax.Array) -> jax.Array:
        """[rows_a, rows_b] round-weighted bit agreement of sign codes [R, rows, u]."""
        weights = jax.nn.softplus(params["round_logits"])
        return jnp.einsum("r,rad,rbd->ab", weights, a, b) / self.bits_per_round

    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del rng
        queries = batch["query_vectors"]
        docs = batch["pos_vectors"]
        if "neg_vectors" in batch:
            docs = jnp.concatenate([docs, batch["neg_vectors"].reshape(-1, docs.shape[-1])])
        q_signs, q_rec = self.binarize(params, queries)
        d_signs, d_rec = self.binarize(params, docs)
        scores = self.similarity(params, q_signs, d_signs)
        mask = batch["logit_mask"].astype(bool) if "logit_mask" in batch else None
        logits = scores / self.temperature
        teacher = queries @ docs.T / self.temperature
        if mask is not None:
            logits = jnp.where(mask, logits, _NEG_INF)
            teacher = jnp.where(mask, teacher, _NEG_INF)
        b, labels = queries.shape[0], batch["labels"]
        log_p = jax.nn.log_softmax(logits, axis=-1)
        ce = -jnp.mean(log_p[jnp.arange(b), labels])
        distill = -jnp.mean(jnp.sum(jax.nn.softmax(teacher, axis=-1) * log_p, axis=-1))
        residuals = [queries - q_rec, docs - d_rec]
        total = ce + self.distill_weight * distill
        metrics = {"contrastive_loss": ce, "distill_loss": distill}
        if "corpus_vectors" in batch:
            corpus = batch["corpus_vectors"].reshape(-1, queries.shape[-1])
            c_signs, c_rec = self.binarize(params, corpus)
            residuals.append(corpus - c_rec)
            off_diagonal = ~jnp.eye(corpus.shape[0], dtype=bool)
            student = jnp.where(off_diagonal, self.similarity(params, c_signs, c_signs)
                                / self.temperature, _NEG_INF)
            teacher_c = jnp.where(off_diagonal, corpus @ corpus.T / self.temperature, _NEG_INF)
            corpus_loss = -jnp.mean(jnp.sum(jax.nn.softmax(teacher_c, axis=-1)
                                            * jax.nn.log_softmax(student, axis=-1), axis=-1))
            total = total + self.corpus_weight * corpus_loss
            metrics["corpus_distill_loss"] = corpus_loss
        mse = jnp.mean(jnp.sum(jnp.square(jnp.concatenate(residuals)), axis=-1))
        total = total + self.reconstruction_weight * mse
        metrics["reconstruction_mse"] = mse
        metrics["accuracy"] = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
        return total, metrics

    def export(self, params: Any) -> dict[str, np.ndarray]:
        """The binariser as the numpy arrays irjax/index/bebr_index.py searches with."""
        params = jax.device_get(params)
        out = {key: np.asarray(params[key], np.float32)
               for key in ("enc_w", "enc_b", "dec_w", "dec_b")}
        out["round_weights"] = np.asarray(jax.nn.softplus(params["round_logits"]), np.float32)
        return out
