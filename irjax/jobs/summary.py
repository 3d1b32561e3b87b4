"""What every training job writes at its end: the comparison table of its evaluations and one
`training_summary.json` (steps, where the run started from, the last training metrics, the
trainer and optimizer settings it ran with, plus the job's own sections).

Only process 0 writes; the others return without touching the workdir.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from irjax.evaluation.report import comparison_table
from irjax.files import atomic_write_text
from irjax.parallel.processes import is_logging_process
from irjax.training.trainer import Trainer, TrainResult

SUMMARY_FILE = "training_summary.json"


def training_summary(trainer: Trainer, result: TrainResult, **sections: Any) -> dict[str, Any]:
    """The summary as a dict: the run's facts first, then `sections` (settings, data counts)."""
    optimizer = trainer.optimizer_config
    sections = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                for k, v in sections.items()}
    return {
        "steps": result.step, "resumed_from": result.resumed_from,
        "final_train_metrics": {k: float(v) for k, v in (result.metrics or {}).items()},
        **sections,
        "trainer": dataclasses.asdict(trainer.config),
        "optimizer": dataclasses.asdict(optimizer) if optimizer is not None else None,
    }


def write_training_summary(trainer: Trainer, result: TrainResult, path: str | Path | None = None,
                           **sections: Any) -> dict[str, Any]:
    """Writes `training_summary(...)` to `path` (default WORKDIR/training_summary.json)."""
    summary = training_summary(trainer, result, **sections)
    if is_logging_process():
        target = Path(path) if path is not None else trainer.workdir / SUMMARY_FILE
        atomic_write_text(target, json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def write_comparison(workdir: str | Path, records: Sequence[Mapping[str, Any]]) -> str:
    """Prints the side-by-side table of `records` and writes WORKDIR/comparison.md."""
    table = comparison_table(list(records))
    if is_logging_process():
        print(table)
        atomic_write_text(Path(workdir) / "comparison.md", table + "\n")
    return table
