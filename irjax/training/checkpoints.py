"""Training checkpoints on top of orbax's CheckpointManager, with a restore that survives corruption.

Each step directory holds three orbax items: `state` (the train-state pytree, StandardSave),
`extra` (JSON: data-iterator position and other small run metadata) and `integrity` (JSON:
a fingerprint of every array leaf plus a hash of `extra`).

Why the fingerprint: on a local filesystem orbax commits a step by renaming a temporary
directory, so a save killed mid-flight leaves only `<step>.orbax-checkpoint-tmp-*` (ignored,
and cleaned up when the next manager opens). But once a step directory exists orbax lists it
as a checkpoint no matter what happened to its files, and restoring a damaged one either
raises (truncated / garbage / missing files, a missing item, an empty directory) or, for a
bit flip inside an array's data file, silently returns wrong numbers -- OCDBT checksums its
b-tree nodes but not the array chunks. The fingerprint turns that last case into an error.

Policy for unreadable steps (`restore_latest`): steps are tried newest to oldest; each failure
is logged with the step directory and the error. Once an older step restores, the newer
unreadable ones are *moved aside* into `<directory>/corrupt/` rather than deleted (they are
evidence, and a transient read error must not destroy data) and rather than left in place
(orbax would keep listing them as the latest step, so `should_save` would refuse every step
up to theirs and saving their step number again would raise StepAlreadyExistsError). If no
step restores at all nothing is moved -- that is more often a changed model or optimizer than
corruption -- and CheckpointRestoreError says what to do.

Multi-host: every process calls every method; a restore counts as good only when it succeeded
on all processes, and only process 0 moves directories, followed by a barrier.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from irjax.errors import MissingFileError, UserError
from irjax.parallel.fingerprint import fingerprint

log = logging.getLogger(__name__)

STATE, EXTRA, INTEGRITY = "state", "extra", "integrity"
CORRUPT_SUBDIR = "corrupt"
_FORMAT = 1


class CheckpointRestoreError(RuntimeError, UserError):
    """Checkpoints exist but none of them can be restored into the given abstract state.

    A UserError: the message lists each step's failure and says what to change (the config, the
    workdir, or the damaged step directories)."""


class CorruptCheckpointError(ValueError):
    """A step restored without an orbax error but fails the integrity check.

    Not a UserError: it is one step's failure, which `restore_latest` logs before trying an older
    step, and `restore_init_checkpoint` reports as a CheckpointRestoreError naming the step."""


def _extra_digest(extra: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()


def _verify(state: Any, extra: Any, integrity: Any) -> None:
    """Raises CorruptCheckpointError when the restored step differs from what was saved."""
    if not isinstance(integrity, dict) or integrity.get("format") != _FORMAT:
        raise CorruptCheckpointError(f"integrity record missing or unreadable: {integrity!r:.200}")
    if not isinstance(extra, dict) or _extra_digest(extra) != integrity.get("extra_sha256"):
        raise CorruptCheckpointError("the `extra` item does not match the hash recorded at save time")
    saved = integrity.get("fingerprints")
    if saved is None:  # saved with verify=False
        return
    now = fingerprint(state)
    if len(now) != len(saved):
        raise CorruptCheckpointError(f"state has {len(now)} array leaves, the save recorded {len(saved)}")
    bad = [row[0] for row, old in zip(now, saved)
           if row[1:3] == old[1:3] and row[3] is not None and row[3:] != old[3:]]
    if bad:
        raise CorruptCheckpointError(f"array data differs from the save-time fingerprint in {bad[:5]}"
                                     f"{' ...' if len(bad) > 5 else ''}")


# ---------------------------------------------------------------- helpers


def _abstract(tree: Any) -> Any:
    """Concrete arrays -> ShapeDtypeStruct (keeping their sharding); abstract leaves pass through."""
    def one(x: Any) -> Any:
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, (np.ndarray, np.generic)):
            return jax.ShapeDtypeStruct(x.shape, x.dtype)
        return x
    return jax.tree.map(one, tree)


def _on_all_processes(ok: bool) -> bool:
    """True only if `ok` holds on every process, so all of them pick the same step."""
    if jax.process_count() == 1:
        return ok
    return bool(np.min(multihost_utils.process_allgather(np.asarray(int(ok), np.int32))))


def describe_error(error: BaseException) -> str:
    """`Type: message` on one line, cut at 400 characters: orbax's errors can run to pages."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:400]}{' ...' if len(text) > 400 else ''}"


# ---------------------------------------------------------------- the checkpointer


class Checkpointer:
    """Saves a train state every `save_every` steps, keeps the newest `keep`, restores the newest readable.

    `async_save` writes in a background thread after the arrays are copied to host; call `wait()`
    (or `close()`) before reading the directory or exiting. `read_only` opens someone else's
    directory (an init checkpoint) without cleaning, writing or moving anything there.
    `verify=False` skips computing fingerprints at save time (restores still check any that
    were recorded, and always check the `extra` hash).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, save_every: int = 100,
                 async_save: bool = True, *, read_only: bool = False, verify: bool = True) -> None:
        if keep < 1:
            raise ValueError(f"keep={keep}: keep at least 1 checkpoint (2 or more lets a corrupt "
                             "latest one fall back to the previous)")
        if save_every < 1:
            raise ValueError(f"save_every={save_every} must be a positive number of steps")
        # orbax (tensorstore) refuses relative paths; users pass WORKDIR relative to their shell.
        self.directory = epath.Path(os.path.abspath(os.fspath(directory)))
        self.read_only = read_only
        self.verify = verify
        self._barriers = 0
        if read_only:
            if not self.directory.exists():
                raise MissingFileError(f"checkpoint directory {self.directory} does not exist")
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
        else:
            # Orbax's default policy also saves the first step it sees when the directory is
            # empty; saving exactly at multiples of save_every (or at a JAX preemption sync
            # point) keeps the schedule predictable across restarts.
            policy = ocp.checkpoint_managers.AnySavePolicy([
                ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
                ocp.checkpoint_managers.PreemptionCheckpointingPolicy()])
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_decision_policy=policy, enable_async_checkpointing=async_save,
                create=True, cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=(STATE, EXTRA, INTEGRITY))
        # orbax deletes half-written step directories of earlier runs in a background thread; a
        # save through another Checkpointer on the same directory could race with it, so wait now.
        await_cleanup = getattr(self._manager, "_maybe_await_cleanup_tmp_directory", None)
        if await_cleanup is not None:
            await_cleanup()

    # -- saving

    def save(self, step: int, state: Any, extra: dict[str, Any] | None = None, force: bool = False) -> bool:
        """Saves when `step` is due (or `force`); returns whether a save was started.

        `extra` must be JSON-serializable (it round-trips through JSON: tuples come back as lists).
        """
        if self.read_only:
            raise PermissionError(f"{self.directory} was opened read_only; open a Checkpointer on "
                                  "the run's own workdir to save")
        if not force and not self._manager.should_save(step):
            return False
        extra = dict(extra or {})
        try:
            extra = json.loads(json.dumps(extra, sort_keys=True))
        except (TypeError, ValueError) as e:
            raise TypeError(f"checkpoint extra must be JSON-serializable ({e}); convert numpy "
                            "scalars with int()/float() and arrays with .tolist()") from None
        integrity = {"format": _FORMAT, "extra_sha256": _extra_digest(extra),
                     "fingerprints": fingerprint(state) if self.verify else None}
        return self._manager.save(step, force=True, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            EXTRA: ocp.args.JsonSave(extra),
            INTEGRITY: ocp.args.JsonSave(integrity)}))

    def wait(self) -> None:
        """Blocks until in-flight async saves are committed (and old steps pruned)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading

    def all_steps(self) -> list[int]:
        """Committed steps on disk, oldest first (re-read from the directory)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def restore_step(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """(state, extra) of one step; raises on any damage, including a fingerprint mismatch.

        `abstract_state` is a pytree of jax.ShapeDtypeStruct (give them a `sharding` to restore
        straight into the target layout) or of concrete arrays whose shardings are reused.
        """
        restored = self._manager.restore(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(_abstract(abstract_state)),
            EXTRA: ocp.args.JsonRestore(),
            INTEGRITY: ocp.args.JsonRestore()}))
        state, extra, integrity = restored[STATE], restored[EXTRA], restored[INTEGRITY]
        _verify(state, extra, integrity)
        return state, extra

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, extra) of the newest step that restores and verifies; None if there are none.

        Unreadable newer steps are skipped with a warning and moved to `<directory>/corrupt/`.
        Raises CheckpointRestoreError if steps exist but none restores.
        """
        self.wait()
        steps = sorted(self.all_steps(), reverse=True)
        failed: list[tuple[int, str]] = []
        for step in steps:
            try:
                state, extra = self.restore_step(step, abstract_state)
                ok, why = True, ""
            except Exception as e:  # any damage shows up as a different exception type
                ok, why = False, describe_error(e)
            if _on_all_processes(ok):
                if failed:
                    self._move_aside([s for s, _ in failed])
                    log.warning("resumed from checkpoint step %d in %s, skipping newer unreadable "
                                "step(s) %s", step, self.directory, [s for s, _ in failed])
                return step, state, extra
            why = why or "it failed to restore on another process"
            log.warning("checkpoint step %d at %s is unreadable, trying the previous one: %s",
                        step, self.step_dir(step), why)
            failed.append((step, why))
        if not failed:
            return None
        details = "\n".join(f"  step {s} ({self.step_dir(s)}): {why}" for s, why in failed)
        raise CheckpointRestoreError(
            f"none of the {len(failed)} checkpoint(s) in {self.directory} could be restored:\n{details}\n"
            "If every step fails the same way, the abstract state probably no longer matches the "
            "saved one (changed model, optimizer or dtype): restore with the old configuration, or "
            "start a new workdir and pass this one as the init checkpoint. If the files are damaged, "
            f"move the step directories out of {self.directory} to start over.")

    def read_params(self, step: int | None = None) -> tuple[int, Any]:
        """(step, params as host numpy arrays) of another run's checkpoint, without knowing its
        model or optimizer: the saved state is restored as plain nested dicts (`step` None: the
        newest step) and its params are checked against the save-time fingerprints."""
        self.wait()
        steps = self.all_steps()
        if not steps:
            raise MissingFileError(f"{self.directory} holds no committed checkpoint steps")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise MissingFileError(f"{self.directory} has no step {step}; it has {steps}")
        restored = self._manager.restore(step, args=ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(), EXTRA: ocp.args.JsonRestore(),
            INTEGRITY: ocp.args.JsonRestore()}))
        state, integrity = restored[STATE], restored[INTEGRITY]
        if not isinstance(state, dict) or "params" not in state:
            raise CorruptCheckpointError(f"{self.step_dir(step)}: the saved state has no params")
        params = jax.tree.map(np.asarray, state["params"])
        saved = {row[0]: row for row in (integrity or {}).get("fingerprints") or []
                 if str(row[0]).startswith(".params")}
        if saved:
            now = fingerprint({"params": params})
            bad = [row[0] for row in now
                   if (old := saved.get(".params" + row[0][len("['params']"):])) is None
                   or (row[3] is not None and row[1:] != old[1:])]
            if bad or len(now) != len(saved):
                raise CorruptCheckpointError(f"{self.step_dir(step)}: params differ from the "
                                             f"save-time fingerprints in {bad[:5]}")
        return step, params

    def latest_good_step(self) -> int | None:
        """Newest committed step whose metadata items read back and match their hash.

        Cheap (no array data is read), so it is what error messages quote; `restore_latest`
        additionally verifies every array against its fingerprint.
        """
        self.wait()
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**{
                    EXTRA: ocp.args.JsonRestore(), INTEGRITY: ocp.args.JsonRestore()}))
                integrity, extra = restored[INTEGRITY], restored[EXTRA]
                if isinstance(integrity, dict) and integrity.get("extra_sha256") == _extra_digest(extra):
                    return step
            except Exception as e:  # damaged: try the previous one
                log.debug("step %d is not readable: %s", step, describe_error(e))
        return None

    def _move_aside(self, steps: list[int]) -> None:
        """Moves unreadable step directories to <directory>/corrupt/ (process 0, then a barrier)."""
        if self.read_only:
            return
        if jax.process_index() == 0:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            target_dir = self.directory / CORRUPT_SUBDIR
            target_dir.mkdir(parents=True, exist_ok=True)
            for step in steps:
                source, target = self.step_dir(step), target_dir / f"{step}.{stamp}"
                source.rename(target)
                log.warning("moved unreadable checkpoint %s to %s; inspect it, then delete it",
                            source, target)
        self._barriers += 1
        ocp.multihost.sync_global_processes(f"irjax_checkpoint_move_aside_{self._barriers}")
        self._manager.reload()


def read_trained_params(directory: str | os.PathLike, step: int | None = None) -> tuple[int, Any]:
    """`Checkpointer.read_params` of a run's checkpoint directory, opened read-only."""
    with Checkpointer(directory, read_only=True) as checkpointer:
        return checkpointer.read_params(step)
