"""T5 as a `TrainableModel`: teacher-forced token cross-entropy, the DSI training objective.

Batch (all int32, 0-padded on the right):
    inputs        [B, Li]  encoder token ids (query or document text)
    inputs_mask   [B, Li]  1 on real tokens
    targets       [B, Lt]  target ids (e.g. a docid), EOS-terminated
    targets_mask  [B, Lt]  1 on real target tokens, EOS included

The decoder reads `shift_right(targets)` (start id 0) and predicts `targets`. The loss is the
mean over *all real target tokens of the global batch*: summed numerator and denominator are
reductions over the global arrays, so the value does not depend on how 'data' shards the batch
(a per-shard mean of means would). Optional label smoothing (with T5's normalising constant, so
a perfect prediction still scores 0) and z-loss (t5x's penalty on log Z², keeping logits from
drifting in bf16).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from irjax.models.t5 import T5, DecodeCache, T5Config, shift_right

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Seq2SeqModel:
    config: T5Config
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    dropout: bool = True  # dropout at config.dropout_rate while training (rng given)

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.z_loss < 0:
            raise ValueError(f"z_loss must be >= 0, got {self.z_loss}")

    @property
    def module(self) -> T5:
        return T5(self.config)

    # -- the TrainableModel contract -------------------------------------------------------
    def init_variables(self, rng: jax.Array, batch: Batch) -> Any:
        """Boxed (logically named) T5 params, from the shapes of one row of `batch`."""
        inputs, mask = jnp.asarray(batch["inputs"])[:1], jnp.asarray(batch["inputs_mask"])[:1]
        decoder_inputs = shift_right(jnp.asarray(batch["targets"])[:1])
        return self.module.init(rng, inputs, mask, decoder_inputs)["params"]

    def loss(self, params: Any, batch: Batch, rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return self.loss_from_logits(self.logits(params, batch, rng), batch)

    def loss_from_logits(self, logits: jax.Array, batch: Batch
                         ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(loss, metrics) of teacher-forced logits [B, Lt, vocab] against batch['targets']."""
        targets = batch["targets"]
        weights = batch["targets_mask"].astype(jnp.float32)
        tokens = jnp.maximum(jnp.sum(weights), 1.0)
        ce, log_z = self.token_losses(logits, targets)
        cross_entropy = jnp.sum(ce * weights) / tokens
        z_term = jnp.sum(jnp.square(log_z) * weights) / tokens
        total = cross_entropy + self.z_loss * z_term
        correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
        rows = jnp.any(weights > 0, axis=-1).astype(jnp.float32)
        all_right = jnp.all((correct > 0) | (weights == 0), axis=-1).astype(jnp.float32)
        metrics = {
            "loss": total,
            "cross_entropy": cross_entropy,
            "z_loss": z_term,
            "token_accuracy": jnp.sum(correct * weights) / tokens,
            "sequence_accuracy": jnp.sum(all_right * rows) / jnp.maximum(jnp.sum(rows), 1.0),
            "target_tokens": jnp.sum(weights),
        }
        return total, metrics

    # -- inference ---------------------------------------------------------------------------
    def logits(self, params: Any, batch: Batch, rng: jax.Array | None = None) -> jax.Array:
        """Teacher-forced float32 logits [B, Lt, vocab]; logits[:, t] predicts targets[:, t].
        Dropout is on only when an rng is given (training) and `dropout` is set."""
        train = rng is not None and self.dropout
        return self.module.apply(
            {"params": params}, batch["inputs"], batch["inputs_mask"],
            shift_right(batch["targets"]), deterministic=not train,
            rngs={"dropout": rng} if train else None)

    def sequence_log_prob(self, params: Any, batch: Batch) -> jax.Array:
        """log p(targets | inputs) [B]: the sum of token log-probabilities over `targets_mask`
        (e.g. to score candidate docids for a query)."""
        logits = self.logits(params, batch)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        token = jnp.take_along_axis(log_probs, batch["targets"][..., None], axis=-1)[..., 0]
        return jnp.sum(token * batch["targets_mask"].astype(jnp.float32), axis=-1)

    def encode(self, params: Any, inputs: jax.Array, inputs_mask: jax.Array) -> jax.Array:
        """Encoder states [B, Li, d_model], computed once per query when generating."""
        return self.module.apply({"params": params}, inputs, inputs_mask, method="encode")

    def decode(self, params: Any, encoded: jax.Array, inputs_mask: jax.Array,
               decoder_input_ids: jax.Array) -> jax.Array:
        """Logits [B, T, vocab] for a fixed-length, 0-padded decoder prefix (start id first):
        logits[:, t] is the distribution of the token after decoder_input_ids[:, :t+1]."""
        return self.module.apply({"params": params}, encoded, inputs_mask, decoder_input_ids,
                                 method="decode")

    def decode_at(self, params: Any, encoded: jax.Array, inputs_mask: jax.Array,
                  decoder_input_ids: jax.Array, position: jax.Array) -> jax.Array:
        """`decode(...)[:, position]` [B, vocab], computing the output layer at that position only."""
        return self.module.apply({"params": params}, encoded, inputs_mask, decoder_input_ids,
                                 position, method="decode_at")

    def cross_keys_values(self, params: Any, encoded: jax.Array) -> Any:
        """Per decoder layer, cross-attention keys and values of `encoded` (see T5)."""
        return self.module.apply({"params": params}, encoded, method="cross_keys_values")

    def decode_at_cross(self, params: Any, cross_kv: Any, inputs_mask: jax.Array,
                        decoder_input_ids: jax.Array, position: jax.Array) -> jax.Array:
        """`decode_at` over precomputed `cross_keys_values` [B, vocab]."""
        return self.module.apply({"params": params}, cross_kv, inputs_mask, decoder_input_ids,
                                 position, method="decode_at_cross")

    def init_decode_cache(self, params: Any, encoded: jax.Array, inputs_mask: jax.Array,
                          max_length: int) -> DecodeCache:
        """State for up to `max_length` `decode_step`s: empty self-attention caches, and the
        encoder states projected for cross-attention once."""
        return self.module.apply({"params": params}, encoded, inputs_mask, max_length,
                                 method="init_decode_cache")

    def decode_step(self, params: Any, cache: DecodeCache, decoder_input_ids: jax.Array
                    ) -> tuple[jax.Array, DecodeCache]:
        """(logits [N, vocab] of position t = cache.index, the advanced cache) from that
        position's decoder input ids [N]: `decode(...)[:, t]`, one position of work per step."""
        return self.module.apply({"params": params}, cache, decoder_input_ids,
                                 method="decode_step")

    # -- pieces ------------------------------------------------------------------------------
    def token_losses(self, logits: jax.Array, targets: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
        """Per-token (cross-entropy, log Z), in float32; with label smoothing the target gets
        1 - s and every other class s / (vocab - 1), minus the entropy of that distribution."""
        logits = logits.astype(jnp.float32)
        vocab = logits.shape[-1]
        log_z = jax.nn.logsumexp(logits, axis=-1)
        # A one-hot contraction rather than a gather keeps a 'model'-sharded vocab axis sharded.
        target_logit = jnp.sum(logits * jax.nn.one_hot(targets, vocab, dtype=logits.dtype), -1)
        if not self.label_smoothing:
            return log_z - target_logit, log_z
        on = 1.0 - self.label_smoothing
        off = self.label_smoothing / (vocab - 1)
        sum_other = jnp.sum(logits, axis=-1) - target_logit
        ce = log_z - on * target_logit - off * sum_other
        entropy = -(on * math.log(on) + (vocab - 1) * off * math.log(off)) if off > 0 else 0.0
        return ce - entropy, log_z
