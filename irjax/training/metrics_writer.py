"""Scalar metrics to TensorBoard, to WORKDIR/metrics.jsonl and to the console, from process 0.

Three sinks because they serve different readers: TensorBoard for curves, the JSONL file for
scripts and tests (one flushed JSON object per write, so a killed run loses at most the line
being written), the console for whoever watches the job. Other processes hold the same
values (metrics are replicated), so they write nothing rather than duplicates.

After a resume, steps between the last checkpoint and the kill are trained and logged again.
The trainer calls `discard_after(resumed step)` first, so metrics.jsonl holds each step once (and
TensorBoard is told to purge the replayed steps); a line cut short by a kill is dropped too.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from irjax.files import atomic_write_text
from irjax.parallel.processes import is_logging_process

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _to_float(name: str, value: Any) -> float:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"metric {name!r} has shape {array.shape}; only scalars can be logged, "
                         "reduce it (e.g. mean) in the model's loss function")
    return float(array.reshape(()))


def _console_line(step: int, scalars: Mapping[str, float]) -> str:
    parts = [f"{k}={v:.6g}" for k, v in sorted(scalars.items())]
    return f"step {step}: " + ", ".join(parts)


def _tqdm_write(line: str) -> None:
    from tqdm import tqdm
    tqdm.write(line)


def _step_of(line: str) -> int | None:
    """The step of one metrics.jsonl line; None for a line that is not a complete record."""
    try:
        record = json.loads(line)
        return int(record["step"]) if line.endswith("\n") else None
    except (ValueError, KeyError, TypeError):
        return None


class MetricsWriter:
    """`write_scalars(step, {name: value})` to every sink; a no-op off the logging process.

    `console` receives one formatted line per write (default: tqdm.write, which does not tear
    a progress bar); pass None to keep the console quiet. Non-finite values are written to
    the JSONL file as the strings 'nan' / 'inf' / '-inf' so that it stays strict JSON.
    """

    def __init__(self, workdir: str | os.PathLike, *,
                 console: Callable[[str], None] | None = _tqdm_write,
                 enabled: bool | None = None) -> None:
        self.enabled = is_logging_process() if enabled is None else enabled
        self.workdir = Path(workdir)
        self._closed = False
        self._console = console
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.workdir / METRICS_FILE, "a", encoding="utf-8")
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(str(self.workdir / TENSORBOARD_DIR), flush_secs=30)

    @property
    def metrics_path(self) -> Path:
        return self.workdir / METRICS_FILE

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Logs the scalars of one step; values may be Python, numpy or (fetched) jax scalars."""
        if self._closed:
            raise RuntimeError("MetricsWriter is closed; create a new one to keep logging")
        if not self.enabled:
            return
        values = {str(k): _to_float(str(k), v) for k, v in scalars.items()}
        record = {"step": int(step), **{k: (v if math.isfinite(v) else repr(v))
                                        for k, v in values.items()}}
        self._jsonl.write(json.dumps(record, sort_keys=True) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._tb.add_scalar(name, value, global_step=int(step))
        if self._console is not None:
            self._console(_console_line(int(step), values))

    def discard_after(self, step: int) -> int:
        """Drops the records of steps after `step` (a resumed run replays them) and any line a
        kill cut short; returns how many lines were dropped."""
        if not self.enabled or self._closed:
            return 0
        self._jsonl.close()
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
        dropped = len(lines) - len(kept)
        if dropped:
            atomic_write_text(self.metrics_path, "".join(kept))
            log.info("%s: dropped %d record(s) after step %d, which this run trains again",
                     self.metrics_path, dropped, step)
            from tensorboardX import SummaryWriter
            self._tb.close()  # TensorBoard drops events from step+1 on when it reads the new file
            self._tb = SummaryWriter(str(self.workdir / TENSORBOARD_DIR), flush_secs=30,
                                     purge_step=step + 1)
        self._jsonl = open(self.metrics_path, "a", encoding="utf-8")
        return dropped

    def flush(self) -> None:
        if self.enabled and not self._closed:
            self._jsonl.flush()
            self._tb.flush()

    def close(self) -> None:
        """Flushes and closes every sink; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._jsonl.close()
            self._tb.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
