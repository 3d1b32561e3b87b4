"""Numbers the batches of a resumable training iterator, so a loss can follow a schedule of its
own (SPLADE's FLOPS-weight warm-up) while the Trainer's `loss(params, batch, rng)` contract stays
as it is: each batch gains `train_step`, one int32 per row (a per-row array shards over 'data' like
every other field), and the count is saved and restored with the iterator's position.
"""
from __future__ import annotations

from typing import Any

import numpy as np

FIELD = "train_step"


class NumberedBatches:
    """Wraps an iterator with get_state/set_state (and example_batch); batch i gets train_step=i."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.count = 0

    def __iter__(self) -> "NumberedBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self._numbered(next(self.inner), self.count)
        self.count += 1
        return batch

    @staticmethod
    def _numbered(batch: Any, step: int) -> dict[str, np.ndarray]:
        batch = dict(batch)
        rows = len(batch["labels"]) if "labels" in batch else len(next(iter(batch.values())))
        batch[FIELD] = np.full(rows, step, np.int32)
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"inner": self.inner.get_state(), "count": self.count}

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or set(state) != {"inner", "count"}:
            raise ValueError("this data position was not saved by NumberedBatches (a run of "
                             "another job?); resume with the job that wrote it")
        self.inner.set_state(state["inner"])
        self.count = int(state["count"])

    def example_batch(self) -> dict[str, np.ndarray]:
        return self._numbered(self.inner.example_batch(), 0)
