"""Where a training run gets its starting state, in one documented order.

1. "workdir"         -- the newest readable checkpoint in the run's own workdir (a restarted or
                        preempted run continues exactly: step, state and data position).
2. "init_checkpoint" -- a checkpoint from another run (e.g. an earlier training stage): its
                        state, but step 0 and a fresh data position, since it is a new run.
3. "imported"        -- weights imported from elsewhere (e.g. Hugging Face), merged into a
                        freshly initialised state by a caller-supplied function.
4. "scratch"         -- `init_from_scratch()`.

A later source is used only when every earlier one is *absent*. A source that is present but
broken raises instead of falling through: a workdir whose checkpoints all fail to restore must
not silently restart from scratch (it would train from step 0 next to the old steps, and orbax
would refuse to save any step up to the newest old one), and an init checkpoint the user asked
for must not be quietly replaced by random weights.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Literal, NamedTuple

from etils import epath

from irjax.errors import MissingFileError
from irjax.training.checkpoints import Checkpointer, CheckpointRestoreError, describe_error

log = logging.getLogger(__name__)

Source = Literal["workdir", "init_checkpoint", "imported", "scratch"]


class Resumed(NamedTuple):
    """Unpacks as (state, step, extra, source); `step` is the last completed step (0 if new)."""

    state: Any
    step: int
    extra: dict[str, Any] | None
    source: Source


def restore_init_checkpoint(path: str | os.PathLike, abstract_state: Any) -> tuple[int, Any]:
    """(step, state) from a Checkpointer directory (its newest readable step) or one step directory in it."""
    path = epath.Path(path)
    if not path.exists():
        raise MissingFileError(f"init checkpoint {path} does not exist; pass a Checkpointer "
                               "directory or one of its step directories (e.g. .../checkpoints/1000)")
    if path.name.isdigit() and not any(p.name.isdigit() for p in path.iterdir()):
        with Checkpointer(path.parent, read_only=True) as checkpointer:
            try:
                state, _ = checkpointer.restore_step(int(path.name), abstract_state)
            except Exception as e:  # damage or a changed state shows up as any exception type
                raise CheckpointRestoreError(
                    f"init checkpoint {path} could not be restored: {describe_error(e)}\n"
                    "If the model, optimizer or dtype changed since it was saved, restore it with "
                    "that configuration; if its files are damaged, pass an earlier step directory "
                    "or the checkpoint directory above it (its newest readable step is used).") from e
        return int(path.name), state
    with Checkpointer(path, read_only=True) as checkpointer:
        restored = checkpointer.restore_latest(abstract_state)
    if restored is None:
        raise MissingFileError(f"init checkpoint {path} holds no committed checkpoint steps")
    step, state, _ = restored
    return step, state


def resume_state(workdir_checkpointer: Checkpointer, abstract_state: Any,
                 init_checkpoint: str | os.PathLike | None,
                 import_weights: Callable[[], Any] | None,
                 init_from_scratch: Callable[[], Any], *,
                 merge_imported: Callable[[Any, Any], Any] | None = None,
                 adapt_init_checkpoint: Callable[[Any], Any] | None = None) -> Resumed:
    """Returns the starting (state, step, extra, source), trying the sources in the module's order.

    `import_weights()` returns imported weights; `merge_imported(fresh_state, weights)` puts them
    into `init_from_scratch()`'s state (without it, the imported value is the whole state).
    `adapt_init_checkpoint(state)` may reset parts of a state restored from `init_checkpoint`
    (e.g. the optimizer); it must have the structure of `abstract_state` to restore at all.
    """
    skipped: list[str] = []

    restored = workdir_checkpointer.restore_latest(abstract_state)
    if restored is not None:
        step, state, extra = restored
        return _chosen(Resumed(state, step, extra, "workdir"),
                       f"step {step} of {workdir_checkpointer.directory}", skipped)
    skipped.append(f"workdir: no checkpoints in {workdir_checkpointer.directory}")

    if init_checkpoint is not None:
        init_step, state = restore_init_checkpoint(init_checkpoint, abstract_state)
        if adapt_init_checkpoint is not None:
            state = adapt_init_checkpoint(state)
        return _chosen(Resumed(state, 0, None, "init_checkpoint"),
                       f"{init_checkpoint} (its step {init_step}; this run starts at step 0)", skipped)
    skipped.append("init_checkpoint: none given")

    if import_weights is not None:
        weights = import_weights()
        state = weights if merge_imported is None else merge_imported(init_from_scratch(), weights)
        return _chosen(Resumed(state, 0, None, "imported"), "imported weights", skipped)
    skipped.append("imported weights: none given")

    return _chosen(Resumed(init_from_scratch(), 0, None, "scratch"), "a fresh initialisation", skipped)


def _chosen(result: Resumed, what: str, skipped: list[str]) -> Resumed:
    because = f" (skipped {'; '.join(skipped)})" if skipped else ""
    log.info("starting state from %s: %s%s", result.source, what, because)
    return result
