"""How a run trains, apart from what it trains: length, mesh, rules, seed, intervals, resume.

Every job takes one `TrainerConfig` (gin binds it as `TrainerConfig.*`, t5x/big_vision style),
so the settings that are the same in every experiment are spelled the same way in every config
and reach the `Trainer` unchanged. A run's length is either `num_steps` or `num_epochs` of the
job's data; the job resolves epochs into steps once it knows its steps per epoch
(`resolved(steps_per_epoch)`).
"""
from __future__ import annotations

import dataclasses
import math

from irjax.choices import check_choice
from irjax.parallel.partitioning import DEFAULT_RULES

PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Settings of `Trainer`; see the module docstring.

    `rules` maps logical axis names ('batch', 'embed', 'mlp', 'heads', 'vocab', ...) to mesh axes
    ('data', 'model'), so changing parallelism is a config edit. `init_checkpoint` is another
    run's checkpoint directory (or one step of it): its params start this run (step 0, fresh
    optimizer and data) when the workdir holds no checkpoint of its own. `eval_every=None`
    evaluates only at the end. `prng_impl` is the random-number generator of the training steps
    (dropout): None keeps JAX's threefry; 'rbg' or 'unsafe_rbg' (MaxText's choice on GPU) draw
    large dropout masks far more cheaply. Parameter init always uses threefry, so the option
    changes the dropout masks and nothing else.
    """

    num_steps: int | None = None
    num_epochs: float = 1.0
    mesh_shape: tuple[int, int] = (-1, 1)
    rules: tuple[tuple[str, str | None], ...] = DEFAULT_RULES
    seed: int = 0
    log_every: int = 100
    eval_every: int | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    init_checkpoint: str | None = None
    progress_bar: bool = True
    prng_impl: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple((str(a), b) for a, b in self.rules))
        object.__setattr__(self, "mesh_shape", tuple(self.mesh_shape))
        if self.num_steps is not None and self.num_steps < 1:
            raise ValueError(f"TrainerConfig.num_steps={self.num_steps} must be a positive number "
                             "of steps, or None to train num_epochs")
        if self.num_steps is None and not (math.isfinite(self.num_epochs) and self.num_epochs > 0):
            raise ValueError(f"TrainerConfig.num_epochs={self.num_epochs} must be > 0")
        for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainerConfig.{name}={getattr(self, name)} must be >= 1")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"TrainerConfig.eval_every={self.eval_every}: use a positive step "
                             "count, or None to evaluate only at the end")
        if self.prng_impl is not None:
            check_choice("TrainerConfig.prng_impl", self.prng_impl, PRNG_IMPLS)
        if len(self.mesh_shape) != 2:
            raise ValueError(f"TrainerConfig.mesh_shape={self.mesh_shape} must be (data, model), "
                             "e.g. (-1, 1) for data parallelism over every device")

    def steps_for(self, steps_per_epoch: int) -> int:
        """`num_steps`, else `num_epochs` epochs of `steps_per_epoch` (at least one step)."""
        if self.num_steps is not None:
            return self.num_steps
        return max(1, math.ceil(self.num_epochs * steps_per_epoch))

    def resolved(self, steps_per_epoch: int) -> "TrainerConfig":
        """A copy whose `num_steps` is set (from epochs when it was None)."""
        return dataclasses.replace(self, num_steps=self.steps_for(steps_per_epoch))
