"""A FLOPs estimate of running a decoder LM over some tokens: 2 x the matmul parameters a token
passes through, plus attention's score and value products over the context it sees.

The estimate is what query-time LM methods report per query beside wall time, because wall time
on a shared CPU says little about the cost on an accelerator. Embedding lookups, norms and
softmaxes are left out (they are not matmuls); the vocabulary projection is counted only for the
positions whose logits are used (every generated token, i.e. the prompt's last position and each
new token but the final one, counted here as `generated`).
"""
from __future__ import annotations

from irjax.models.decoder_lm import DecoderConfig


def matmul_params_per_token(config: DecoderConfig) -> int:
    """Weights of the q/k/v/o projections and the gated MLP over all layers (no embeddings)."""
    d, hd = config.hidden_size, config.head_dim
    attention = d * config.num_heads * hd * 2 + d * config.num_kv_heads * hd * 2
    mlp = 3 * d * config.intermediate_size
    return config.num_layers * (attention + mlp)


def generation_flops(config: DecoderConfig, prompt_tokens: int, generated_tokens: int) -> float:
    """FLOPs of one row: the prompt's `prompt_tokens` and the `generated_tokens` after it, each
    position attending to every earlier one (no sliding-window discount: an upper bound for
    Gemma 3's local layers)."""
    total = prompt_tokens + generated_tokens
    dense = 2.0 * matmul_params_per_token(config) * total
    head = 2.0 * config.hidden_size * config.vocab_size * generated_tokens
    # scores q.k and the weighted sum of values: 2 x 2 x heads x head_dim per (query, key) pair
    pairs = total * (total + 1) / 2
    attention = 4.0 * config.num_layers * config.num_heads * config.head_dim * pairs
    return dense + head + attention
