"""How an encoder's training step runs, apart from what it computes: one config of the switches
that trade memory, speed and RNG cost without changing the model (gin: `EncoderEfficiency.*`).

  attention          'einsum' (reference, with attention dropout), 'fused'
                     (jax.nn.dot_product_attention, XLA) or 'cudnn' (flash attention, NVIDIA GPUs);
                     the fused paths have no attention-probability dropout (bert.ATTENTION)
  remat              per-layer rematerialisation: 'none', 'full' or 'dots' (bert.REMAT)
  grad_cache_tokens  GradCache slices of about this many tokens per device (dual encoders;
                     dual_encoder_training.py), None for off

The optimizer's switches (flattened Adam, bfloat16 first moment) live in OptimizerConfig and the
dropout RNG in TrainerConfig.prng_impl, since they apply to every model.
"""
from __future__ import annotations

import dataclasses

from irjax.choices import check_choice
from irjax.models.bert import ATTENTION, REMAT


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
