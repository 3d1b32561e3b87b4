"""How an encoder's training step runs, apart from what it computes: one config of the switches
that trade memory, speed and RNG cost without changing the model (gin: `EncoderEfficiency.*`).

  attention          'einsum' (reference, with attention dropout), 'fused'
                     (jax.nn.dot_product_attention, XLA) or 'cudnn' (flash attention, NVIDIA GPUs);
                     the fused paths have no attention-probability dropout (ATTENTION)
  remat              per-layer rematerialisation: 'none', 'full' or 'dots' (REMAT)
  grad_cache_tokens  GradCache slices of about this many tokens per device (dual encoders;
                     dual_encoder_training.py), None for off

T5 takes `attention` and `remat` as T5Config fields (DSI and query-generation steps). The
optimizer's switches (flattened Adam, bfloat16 first moment) live in OptimizerConfig and the
dropout RNG in TrainerConfig.prng_impl, since they apply to every model.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from irjax.choices import check_choice

# How attention runs. 'einsum': two einsums around a float32 softmax, with attention dropout (the
# reference). 'fused': jax.nn.dot_product_attention, XLA's implementation wherever it runs.
# 'cudnn': the same call with implementation='cudnn' (flash attention; NVIDIA GPUs only). The
# fused paths take no dropout argument, so attention-probability dropout is off there (hidden
# dropout stays); with dropout off all three give the same outputs.
ATTENTION = ("einsum", "fused", "cudnn")
# What each layer keeps for the backward pass: 'none' keeps everything; 'full' recomputes the
# whole layer; 'dots' keeps matmul outputs without batch dims (MaxText's 'minimal').
REMAT = ("none", "full", "dots")


def remat_policy(remat: str) -> Callable[..., Any] | None:
    """The jax.checkpoint policy of a REMAT choice other than 'none' (None: save nothing)."""
    return None if remat == "full" else jax.checkpoint_policies.dots_with_no_batch_dims_saveable


@dataclasses.dataclass(frozen=True)
class EncoderEfficiency:
    attention: str = "einsum"
    remat: str = "none"
    grad_cache_tokens: int | None = None

    def __post_init__(self) -> None:
        check_choice("EncoderEfficiency.attention", self.attention, ATTENTION)
        check_choice("EncoderEfficiency.remat", self.remat, REMAT)
        if self.grad_cache_tokens is not None and self.grad_cache_tokens < 1:
            raise ValueError(f"EncoderEfficiency.grad_cache_tokens={self.grad_cache_tokens} must be "
                             ">= 1 (tokens per slice) or None (off)")
