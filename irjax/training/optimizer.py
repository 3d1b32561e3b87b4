"""AdamW with warmup and decay, global-norm clipping, decoupled weight decay on matrices only,
and optional gradient accumulation -- the one optimizer recipe the trainer builds by default.

Every step count here (`num_steps`, `warmup_steps`, the argument of `learning_rate_at`) is in
*trainer steps*, i.e. batches, also with gradient accumulation: with `grad_accum_steps=k` the
optimizer updates once every k batches, with the learning rate the schedule gives at the first
batch of that group. So a run of N*k batches with accumulation over k follows exactly the
schedule (and, for a mean-reduced loss, the updates) of a run of N batches k times larger.

Two switches change how the update runs, not what it is: `flatten` ravels every parameter into
one vector for Adam's moment updates (optax.flatten), so the many small per-leaf elementwise
kernels become one -- launch overhead on GPU; it gathers model-sharded parameters, so use it
with data parallelism; `mu_dtype='bfloat16'` keeps the first moment in bfloat16, halving its
memory traffic (its updates then differ from float32's by bfloat16 rounding, ~0.4%).

Weight decay skips biases and LayerNorm/RMSNorm scales: decay pulls parameters towards zero,
which for a scale means towards switching the layer off and for a bias towards an arbitrary
offset; only weight matrices and embeddings (arrays with ndim >= 2 that are not named
'bias' or 'scale') are decayed. See `decay_mask`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import optax

from irjax.choices import check_choice

Decay = Literal["cosine", "linear", "constant"]
DECAYS: tuple[str, ...] = get_args(Decay)
NO_DECAY_NAMES = frozenset({"bias", "scale"})


def decay_mask(params: Any) -> Any:
    """True for leaves that get weight decay: ndim >= 2 and the last path key is not a bias or
    norm scale (flax names them 'bias' and 'scale'). 1-d leaves are excluded even under other
    names, since they are per-feature gains/offsets in every layer type flax provides."""
    def decays(path: tuple[Any, ...], leaf: Any) -> bool:
        name = getattr(path[-1], "key", getattr(path[-1], "name", None)) if path else None
        return jnp.ndim(leaf) >= 2 and name not in NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(decays, params)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Settings of the optimizer, bound by gin as `OptimizerConfig.*` in every training config.

    The schedule's length is the run's: leave `num_steps` None and the trainer resolves it from
    its `TrainerConfig` (`resolved(num_steps)`), with `warmup_steps` = `warmup_fraction` of it
    unless given. The trainer also asks it for the rate at each step, to log it.
    """

    learning_rate: float
    num_steps: int | None = None
    warmup_steps: int | None = None
    warmup_fraction: float = 0.0
    decay: Decay = "cosine"
    end_learning_rate_fraction: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = 1.0
    grad_accum_steps: int = 1
    flatten: bool = False
    mu_dtype: str | None = None  # e.g. 'bfloat16'; None keeps the parameters' dtype

    def __post_init__(self) -> None:
        if self.learning_rate < 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be >= 0")
        if self.num_steps is not None and self.num_steps < 1:
            raise ValueError(f"num_steps={self.num_steps} must be >= 1 (the schedule's length)")
        if not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction={self.warmup_fraction} must be in [0, 1]")
        if self.warmup_steps is not None and not (
                0 <= self.warmup_steps <= (self.num_steps or self.warmup_steps)):
            raise ValueError(f"warmup_steps={self.warmup_steps} must be in [0, num_steps="
                             f"{self.num_steps}]; shorten warmup or train longer")
        check_choice("OptimizerConfig.decay", self.decay, DECAYS)
        if not 0 <= self.end_learning_rate_fraction <= 1:
            raise ValueError(f"end_learning_rate_fraction={self.end_learning_rate_fraction} must "
                             "be in [0, 1] (a fraction of the peak learning rate)")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ValueError(f"clip_norm={self.clip_norm} must be > 0, or None to disable clipping")
        if self.grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps={self.grad_accum_steps} must be >= 1 (1 = off)")
        if self.mu_dtype is not None:
            try:
                jnp.dtype(self.mu_dtype)
            except TypeError as e:
                raise ValueError(f"OptimizerConfig.mu_dtype={self.mu_dtype!r} is not a dtype; use "
                                 "'bfloat16', 'float32' or None") from e

    def resolved(self, num_steps: int) -> "OptimizerConfig":
        """This config for a run of `num_steps` batches (kept if the schedule's length is set):
        warmup_steps from warmup_fraction unless given."""
        steps = self.num_steps if self.num_steps is not None else num_steps
        warmup = (self.warmup_steps if self.warmup_steps is not None
                  else int(self.warmup_fraction * steps))
        return dataclasses.replace(self, num_steps=steps, warmup_steps=warmup)

    def _length(self) -> tuple[int, int]:
        if self.num_steps is None:
            raise ValueError("OptimizerConfig.num_steps is unset: the schedule needs the run's "
                             "length; call resolved(num_steps) (the Trainer does)")
        warmup = (self.warmup_steps if self.warmup_steps is not None
                  else int(self.warmup_fraction * self.num_steps))
        return self.num_steps, warmup

    def schedule(self) -> optax.Schedule:
        """Learning rate as a function of the trainer step (batch index, from 0).

        Linear warmup from 0 to the peak over `warmup_steps`, then the decay down to
        `end_learning_rate_fraction * learning_rate` at `num_steps` (held there after).
        """
        num_steps, warmup_steps = self._length()
        peak = self.learning_rate
        end = peak * self.end_learning_rate_fraction
        span = num_steps - warmup_steps
        if self.decay == "constant" or span == 0:
            after = optax.constant_schedule(peak)
        elif self.decay == "linear":
            after = optax.linear_schedule(peak, end, span)
        else:
            after = optax.cosine_decay_schedule(peak, span, alpha=self.end_learning_rate_fraction)
        if warmup_steps == 0:
            return after
        warmup = optax.linear_schedule(0.0, peak, warmup_steps)
        return optax.join_schedules([warmup, after], [warmup_steps])

    def learning_rate_at(self, step: int) -> float:
        """The rate of the update that the batch with index `step` (from 0) contributes to."""
        k = self.grad_accum_steps
        return float(self.schedule()(step // k * k))

    def build(self) -> optax.GradientTransformation:
        """clip_by_global_norm -> AdamW(masked decay), wrapped in MultiSteps when accumulating.

        Clipping sits inside the accumulation, so it bounds the averaged gradient that the
        update actually uses, not each micro-batch's.
        """
        schedule, k = self.schedule(), self.grad_accum_steps
        # The inner optimizer counts updates; map update u to its first batch, u * k.
        per_update = schedule if k == 1 else (lambda count: schedule(count * k))
        adamw = self._adamw(per_update)
        parts = ([optax.clip_by_global_norm(self.clip_norm)] if self.clip_norm is not None
                 else []) + [adamw]
        transform = optax.chain(*parts)
        if k == 1:
            return transform
        return optax.MultiSteps(transform, every_k_schedule=k).gradient_transformation()


    def _adamw(self, schedule: optax.Schedule) -> optax.GradientTransformation:
        """optax.adamw's three parts, so that Adam's moments alone can run flattened (decay needs
        the parameter tree: its mask is by leaf name and rank)."""
        adam = optax.scale_by_adam(b1=self.b1, b2=self.b2, eps=self.eps,
                                   mu_dtype=None if self.mu_dtype is None else jnp.dtype(self.mu_dtype))
        return optax.chain(optax.flatten(adam) if self.flatten else adam,
                           optax.add_decayed_weights(self.weight_decay, decay_mask),
                           optax.scale_by_learning_rate(schedule))


def make_optimizer(learning_rate: float, num_steps: int, warmup_steps: int = 0,
                   **settings: Any) -> optax.GradientTransformation:
    """The optax transform for these settings; see `OptimizerConfig` for their meaning."""
    return OptimizerConfig(learning_rate, num_steps, warmup_steps, **settings).build()


def learning_rate_at(step: int, config: OptimizerConfig) -> float:
    """`config.learning_rate_at(step)`, as a function for loggers holding only the config."""
    return config.learning_rate_at(step)
