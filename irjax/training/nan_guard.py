"""Stops training at the first NaN/Inf metric, before the bad state can be checkpointed.

Call `check_finite(step, metrics)` after each train step and *before* `Checkpointer.save`:
then the newest checkpoint on disk is always a finite state, and the error tells the user
which step it is and what to change, since resuming with the same settings replays the same
batches (the data position is checkpointed) and will most likely diverge again.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Protocol

import jax
import numpy as np

from irjax.errors import UserError


class _HasLatestGoodStep(Protocol):
    directory: Any

    def wait(self) -> None: ...

    def latest_good_step(self) -> int | None: ...


class NonFiniteLossError(FloatingPointError, UserError):
    """A training metric became NaN or Inf; attributes say where, and which checkpoint is kept.

    A UserError: the fix is a setting (learning rate, warmup, clipping) the message names, and the
    traceback would only point at `check_finite`, not at the cause of the divergence."""

    def __init__(self, step: int, metric: str, value: Any, last_good_step: int | None = None,
                 checkpoint_dir: str | None = None, others: Mapping[str, Any] | None = None) -> None:
        self.step, self.metric, self.value = step, metric, value
        self.last_good_step, self.checkpoint_dir = last_good_step, checkpoint_dir
        self.others = dict(others or {})
        super().__init__(self._message())

    def _message(self) -> str:
        also = "".join(f", {k}={_short(v)}" for k, v in self.others.items())
        head = (f"non-finite {self.metric} at step {self.step}: {self.metric}={_short(self.value)}"
                f"{' (also non-finite' + also + ')' if also else ''}. Training stopped; this step "
                "was not checkpointed.")
        where = f" in {self.checkpoint_dir}" if self.checkpoint_dir else ""
        if self.last_good_step is not None:
            kept = (f" The last good checkpoint, step {self.last_good_step}{where}, is kept; rerunning "
                    f"resumes from it and replays the same batches.")
        else:
            kept = " No checkpoint has been written yet, so a rerun starts from the beginning."
        advice = (" Before rerunning, lower the learning rate (e.g. halve it or lengthen warmup), "
                  "enable or tighten gradient clipping, or inspect the batches after "
                  f"step {self.last_good_step or 0}.")
        return head + kept + advice


def _short(value: Any) -> str:
    array = np.asarray(value)
    if array.ndim == 0:
        return repr(array.item())
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    return f"array{list(array.shape)} with {bad} non-finite value(s)"


def _is_finite(value: Any) -> bool:
    if isinstance(value, (bool, int, str, bytes)) or value is None:
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating)):
        return True
    return bool(np.all(np.isfinite(array)))


def check_finite(step: int, metrics: Mapping[str, Any], *, last_good_step: int | None = None,
                 checkpointer: _HasLatestGoodStep | None = None) -> None:
    """Raises NonFiniteLossError naming the step and metric if any metric is NaN or Inf.

    Metrics are fetched from the device in one transfer. The error quotes the last good
    checkpoint: `last_good_step` if given, else asked of `checkpointer` (after waiting for its
    in-flight save, which holds the previous, finite state, to commit).
    """
    host = jax.device_get(dict(metrics))
    bad = {name: value for name, value in host.items() if not _is_finite(value)}
    if not bad:
        return
    metric = "loss" if "loss" in bad else next(iter(bad))
    checkpoint_dir = None
    if checkpointer is not None:
        checkpointer.wait()
        checkpoint_dir = str(checkpointer.directory)
        if last_good_step is None:
            last_good_step = checkpointer.latest_good_step()
    others = {k: v for k, v in bad.items() if k != metric}
    raise NonFiniteLossError(step, metric, bad[metric], last_good_step, checkpoint_dir, others)
