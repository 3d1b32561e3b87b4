"""Training compute of a step, so that different model families can be compared at matched
compute (the scaling study: DSI against the dual encoder at equal FLOPs).

Compute is the usual estimate C = 6 x N x D (2 FLOPs per parameter per token forward, 4 backward),
applied to each part of a model with the tokens that part actually processes, since the parts
of an encoder-decoder see sequences of very different lengths:

    T5 (DSI)      encoder layers + the decoder's cross-attention key/value projections
                  x encoder tokens (B x Li); decoder layers (self-attention, cross-attention
                  query/output, MLP) + the output projection (d_model x vocab) x decoder tokens
                  (B x Lt)
    BERT towers   encoder layers x every query and document token (B x (Lq + (1 + n) x Ld)),
                  B queries, their B positives and n hard negatives each

N counts matmul weights only: embedding lookups, norms, biases and relative-position tables do
(next to) no FLOPs, so they are left out, as is usual; so are attention scores and mixing
(~4 x L x d per token per layer; 8% of a MiniLM step at length 192) and the B x B score matrix.
Tokens are the padded batch shapes, which is what the hardware executes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from irjax.models.bert import BertConfig
from irjax.models.decoder_lm import DecoderConfig
from irjax.models.t5 import T5Config

FLOPS_PER_PARAM_TOKEN = 6  # forward 2 + backward 4


@dataclasses.dataclass(frozen=True)
class StepCost:
    """Training FLOPs of one global batch, part by part: name -> (matmul params, tokens/step)."""

    family: str
    parts: dict[str, tuple[int, int]]
    tokens_per_step: int  # distinct (padded) tokens fed to the model per step
    total_params: int  # every parameter, embeddings included (reported, not used for FLOPs)

    @property
    def matmul_params(self) -> int:
        return sum(p for p, _ in self.parts.values())

    @property
    def flops_per_step(self) -> float:
        return float(FLOPS_PER_PARAM_TOKEN * sum(p * t for p, t in self.parts.values()))

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "flops_per_step": self.flops_per_step,
                "matmul_params": self.matmul_params, "total_params": self.total_params,
                "tokens_per_step": self.tokens_per_step,
                "parts": {k: {"params": p, "tokens_per_step": t} for k, (p, t) in self.parts.items()}}


def t5_param_counts(config: T5Config) -> dict[str, int]:
    """Parameters of `irjax.models.t5.T5` by role (matching its init exactly)."""
    d, inner, ff = config.d_model, config.num_heads * config.d_kv, config.d_ff
    enc, dec = config.num_layers, config.num_decoder_layers or config.num_layers
    attention = 4 * d * inner             # q, k, v, o
    mlp = 3 * d * ff                      # wi_0, wi_1, wo (gated GELU)
    return {
        "encoder": enc * (attention + mlp),
        "cross_kv": dec * 2 * d * inner,  # cross-attention k, v: applied to encoder states
        "decoder": dec * (attention + 2 * d * inner + mlp),  # self-attention, cross q/o, MLP
        "lm_head": 0 if config.tie_word_embeddings else d * config.vocab_size,
        "embedding": config.vocab_size * d,
        "norms": d * (2 * enc + 1 + 3 * dec + 1),
        "relative_attention": 2 * config.relative_attention_num_buckets * config.num_heads,
    }


def dsi_step_cost(config: T5Config, batch_size: int, inputs_length: int,
                  targets_length: int) -> StepCost:
    """One DSI (teacher-forced T5) training step on [B, Li] inputs and [B, Lt] targets."""
    counts = t5_param_counts(config)
    enc_tokens, dec_tokens = batch_size * inputs_length, batch_size * targets_length
    # Tied embeddings still cost a d_model x vocab matmul for the logits.
    logits = counts["lm_head"] or counts["embedding"]
    return StepCost("dsi", {"encoder": (counts["encoder"], enc_tokens),
                            "cross_kv": (counts["cross_kv"], enc_tokens),
                            "decoder": (counts["decoder"], dec_tokens),
                            "logits": (logits, dec_tokens)},
                    enc_tokens + dec_tokens, sum(counts.values()))


def bert_matmul_params(config: BertConfig) -> int:
    """Weights of the encoder layers' matmuls (q, k, v, o, intermediate, output)."""
    d, f = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * (4 * d * d + 2 * d * f)


def dual_encoder_step_cost(config: BertConfig, batch_size: int, query_length: int,
                           doc_length: int, num_hard_negatives: int = 0,
                           shared_towers: bool = True) -> StepCost:
    """One dual-encoder training step: B queries, B positives and B x n hard negatives, every
    token through one tower's layers (separate towers double the weights, not the FLOPs)."""
    layers = bert_matmul_params(config)
    tokens = batch_size * (query_length + (1 + num_hard_negatives) * doc_length)
    total = config.num_params() * (1 if shared_towers else 2)
    return StepCost("dual_encoder", {"towers": (layers, tokens)}, tokens, total)


def steps_for_budget(budget_flops: float, cost: StepCost) -> int:
    """The whole number of steps whose FLOPs come closest to `budget_flops` (at least one)."""
    if not math.isfinite(budget_flops) or budget_flops <= 0:
        raise ValueError(f"the FLOP budget must be positive and finite, got {budget_flops}")
    return max(1, round(budget_flops / cost.flops_per_step))


def decoder_matmul_params(config: DecoderConfig) -> int:
    """Weights of a decoder LM's layer matmuls (q, k, v, o, gate, up, down), output excluded."""
    d, f, hd = config.hidden_size, config.intermediate_size, config.head_dim
    attention = d * hd * (2 * config.num_heads + 2 * config.num_kv_heads)
    return config.num_layers * (attention + 3 * d * f)


def decoder_forward_flops(config: DecoderConfig, tokens: int, context: int = 0,
                          logit_positions: int = 0) -> float:
    """Inference FLOPs of one sequence's forward pass over `tokens` new tokens that follow
    `context` cached ones: 2 x layer matmul weights per token, 2 x hidden x vocab per position
    projected onto the vocabulary (`logit_positions`: 1 when only the next token is read), and
    the attention scores and mixing, 4 x heads x head_dim per (query, visible key) pair and
    layer, causal and capped by a sliding layer's window. Rerankers report it per query as the
    compute their extra quality costs (inference only: no backward factor here)."""
    if tokens < 0 or context < 0 or logit_positions < 0:
        raise ValueError(f"tokens={tokens}, context={context} and logit_positions="
                         f"{logit_positions} must be >= 0")
    linear = 2.0 * decoder_matmul_params(config) * tokens
    logits = 2.0 * config.hidden_size * config.vocab_size * logit_positions
    pairs_full = tokens * context + tokens * (tokens + 1) / 2  # query t sees context + t + 1 keys
    per_pair = 4.0 * config.num_heads * config.head_dim
    attention = 0.0
    for layer in range(config.num_layers):
        pairs = pairs_full
        if config.is_sliding(layer):
            window = config.sliding_window
            pairs = sum(min(context + t + 1, window) for t in range(tokens))
        attention += per_pair * pairs
    return linear + logits + attention


def generation_flops(config: DecoderConfig, prompt_tokens: int, generated_tokens: int) -> float:
    """Inference FLOPs of one generated row: the prompt's forward pass and each new token over
    the cache, with the vocabulary projected at every position whose logits are sampled from (the
    prompt's last and each new token but the final one: `generated_tokens` positions)."""
    return decoder_forward_flops(config, prompt_tokens + generated_tokens, 0, generated_tokens)
