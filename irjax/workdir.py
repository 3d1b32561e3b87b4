"""A workdir is a transaction: one run at a time, and results that always belong to the last run.

    with workdir_transaction("workdir/bm25"):          # what `irjax.main` does around every job
        evaluate_retriever("scifact", "test", "workdir/bm25", retriever)

`workdir_transaction` holds the workdir lock (irjax/workdir_lock.py) and publishes
WORKDIR/status.json first and last: `{"state": "running" | "failed" | "done", "pid", "host",
"command", "started", "finished", "error", ...}`. Readers trust metrics.json and its siblings only
when status.json says "done".

Why status.json plus moving stale results aside, rather than writing everything under temporary
names and publishing it together at the end: a job's outputs are not one file set written at one
moment. Training keeps checkpoints, metrics.jsonl and TensorBoard events that must survive a
failure or a kill (the next run resumes from them), and jobs write results into sub-folders at
different times (WORKDIR/zero_shot/, eval/step_N/, paths/...). A staging area would have to
exclude the state that must persist, and a kill between two renames would still leave a mixture.
Instead, when a run starts (after it has the lock, before it writes anything):

* the results of the previous run (`RESULT_NAMES`, anywhere in the workdir outside the state
  folders `KEPT_DIRS` and the periodic evaluations eval/step_N/, which like metrics.jsonl are
  training history a resumed run does not repeat; plus the previous status.json) are moved into
  WORKDIR/previous_results/
  if that run finished ("done", or no status.json: a workdir from before this module), so that
  nothing a completed run produced is lost and nothing stale sits next to the new config.gin;
* result files of a run that failed or was killed are partial: they go to
  previous_results/unfinished/, so that previous_results/ itself keeps the last completed run.

A run that finishes removes previous_results/ (its own results supersede them); a run that fails
leaves it and says so in status.json. Checkpoints, metrics.jsonl (trimmed to the resumed step by
the trainer), tensorboard/, embedding caches and other state are never touched, so training
resumes after a failure or a kill exactly as before. In multi-process runs process 0 does all of
this; the others wait for it at the start and at the end.

A remote WORKDIR (gs://, s3://) works the same way, with two differences an object store
imposes: its lock is local to the host (irjax/workdir_lock.py), and moving results aside copies
and deletes them one by one, straight into previous_results/ (there is no atomic rename to
stage them with; a kill in between leaves some in each place, and status.json still says the
run did not finish).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from irjax.files import atomic_write_text
from irjax.parallel.processes import is_logging_process, barrier
from irjax.paths import AnyPath, as_path, remove_tree, walk
from irjax.workdir_lock import WorkdirLock, WorkdirLockedError

log = logging.getLogger(__name__)

STATUS_NAME = "status.json"
PREVIOUS_DIR = "previous_results"
UNFINISHED_DIR = "unfinished"
RESULT_NAMES = frozenset({
    "metrics.json", "run.trec", "per_query.jsonl", "per_query.tsv", "config.gin",
    "operative_config.gin", "comparison.md", "comparison.json", "training_summary.json",
    "study.md", "study.json", "continual.json", "continual.md", "continual.png",
    "memorization.json", "phase.json", "samples.md", "pseudo_queries.jsonl",
})
KEPT_DIRS = frozenset({"checkpoints", "tensorboard", "embedding_cache", PREVIOUS_DIR})
_STEP_DIR = re.compile(r"step_[0-9]+")

__all__ = ["workdir_transaction", "read_status", "WorkdirLockedError", "STATUS_NAME"]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_status(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """WORKDIR/status.json; None when absent, {"state": "unreadable"} (with a warning naming the
    file) when it cannot be parsed, which counts as a run that did not finish."""
    path = as_path(workdir) / STATUS_NAME
    if not path.exists():
        return None
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s is unreadable (%s); treating the previous run as unfinished", path, e)
        return {"state": "unreadable"}
    return status if isinstance(status, dict) else {"state": "unreadable"}


def _kept(workdir: AnyPath, folder: AnyPath) -> bool:
    """State folders (any depth), hidden ones, and WORKDIR/eval/step_N: periodic evaluations
    are training history like metrics.jsonl, which a resumed run does not repeat."""
    relative = folder.relative_to(workdir).parts
    return (folder.name in KEPT_DIRS or folder.name.startswith(".")
            or (len(relative) == 2 and relative[0] == "eval" and _STEP_DIR.match(relative[1])))


def result_files(workdir: AnyPath) -> list[AnyPath]:
    """Every result file of the workdir (see the module docstring), sorted."""
    found: list[AnyPath] = []
    for here, dirs, files in walk(workdir):
        dirs[:] = [d for d in dirs if not _kept(workdir, here / d)]
        found.extend(here / name for name in files if name in RESULT_NAMES)
    return sorted(found)


def _move_into(workdir: AnyPath, results: list[AnyPath], target: AnyPath) -> None:
    """Moves `results` (keeping their paths relative to `workdir`) into a fresh `target`."""
    if not isinstance(workdir, Path):
        _move_into_remote(workdir, results, target)
        return
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for path in results:
        destination = staging / path.relative_to(workdir)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, destination)
        parent = path.parent
        while parent != workdir:  # folders that only held results (e.g. zero_shot/)
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    if (workdir / STATUS_NAME).exists():
        shutil.copy2(workdir / STATUS_NAME, staging / STATUS_NAME)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def _move_into_remote(workdir: AnyPath, results: list[AnyPath], target: AnyPath) -> None:
    """`_move_into` on an object store: no staging folder, since renaming it would copy every
    file again; empty folders vanish by themselves there (module docstring)."""
    remove_tree(target)
    for path in results:
        destination = target / path.relative_to(workdir).as_posix()
        destination.parent.mkdir(parents=True, exist_ok=True)
        path.rename(destination)
    status = workdir / STATUS_NAME
    if status.exists():
        status.copy(target / STATUS_NAME, overwrite=True)


def _set_aside_previous(workdir: AnyPath, previous: dict[str, Any] | None) -> str:
    """Moves the previous run's results out of the way; returns a sentence saying where."""
    results = result_files(workdir)
    if not results:
        return "no previous results"
    target = workdir / PREVIOUS_DIR
    if previous is not None and previous.get("state") != "done":
        # A failed or killed run's partial results: kept apart from the last completed run's.
        target = target / UNFINISHED_DIR
        target.parent.mkdir(exist_ok=True)
    _move_into(workdir, results, target)
    return f"moved {len(results)} result file(s) of the previous run to {target}"


def _write_status(workdir: AnyPath, status: dict[str, Any]) -> None:
    atomic_write_text(workdir / STATUS_NAME, json.dumps(status, indent=2) + "\n")


@contextlib.contextmanager
def workdir_transaction(workdir: str | os.PathLike, command: str | None = None
                        ) -> Iterator[AnyPath]:
    """Runs the body as the workdir's only run, with status.json and stale results handled.

    Raises WorkdirLockedError at once if another live run holds the workdir. Nested use on the
    same workdir or a sub-folder (a job calling another job) is a no-op around the inner body.
    """
    workdir = as_path(workdir)
    lock = WorkdirLock(workdir, command)
    lock.acquire()
    if lock.reentered:
        try:
            yield workdir
        finally:
            lock.release()
        return
    writer = is_logging_process()
    status: dict[str, Any] = {}
    try:
        if writer:
            previous = read_status(workdir)
            if previous is not None and previous.get("state") == "running":
                log.warning("the previous run in %s (pid %s, started %s) never finished; it was "
                            "killed or crashed", workdir, previous.get("pid"), previous.get("started"))
            done = _set_aside_previous(workdir, previous)
            log.info("%s: %s", workdir, done)
            assert lock.holder is not None
            status = {"state": "running", "pid": lock.holder.pid, "host": lock.holder.host,
                      "command": lock.holder.command, "started": _now(), "previous": done}
            if lock.previous is not None:
                status["took_over_lock_from"] = lock.previous.describe()
            _write_status(workdir, status)
        barrier(f"irjax workdir start {workdir}")
        start = time.perf_counter()
        try:
            yield workdir
        except BaseException as e:
            if writer:
                kept = (workdir / PREVIOUS_DIR).is_dir()
                status.update(state="failed", finished=_now(),
                              seconds=round(time.perf_counter() - start, 2),
                              error=f"{type(e).__name__}: {e}",
                              traceback=traceback.format_exc()[-4000:],
                              previous_results=str(workdir / PREVIOUS_DIR) if kept else None)
                with contextlib.suppress(OSError):
                    _write_status(workdir, status)
            raise
        barrier(f"irjax workdir end {workdir}")
        if writer:
            remove_tree(workdir / PREVIOUS_DIR)
            status.update(state="done", finished=_now(),
                          seconds=round(time.perf_counter() - start, 2))
            status.pop("previous", None)
            _write_status(workdir, status)
    finally:
        lock.release()

