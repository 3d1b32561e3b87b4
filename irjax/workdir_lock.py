"""One run per workdir: an OS file lock on WORKDIR/.lock, held for the life of the run.

Why a kernel lock (fcntl.flock) and not a pid file: the kernel releases a flock when its holder
dies, however it dies (kill -9, OOM, power loss of a local disk excepted), so a crashed run can
never wedge its workdir, and no pid/host guess can mistake a live run for a dead one. The lock
file also holds the holder's pid, host, start time and command line, for two readers:

* a second run that finds the lock taken exits at once with `WorkdirLockedError` naming that
  holder (before it has read any data or written anything into the workdir);
* a run that gets the lock but finds a previous holder's details still in the file knows that
  holder died without releasing it (a clean release empties the file) and says so in a warning.

The file is emptied, never deleted, on release: unlinking a lock file lets two processes lock two
different inodes under one name. Locks are per process: a job that runs another job into the same
workdir or a sub-folder of it (a training job evaluating into WORKDIR/zero_shot, a job called
under `workdir_transaction` that takes the lock again) re-enters the lock its process already
holds instead of deadlocking on it. Threads of one process share it the same way.

Multi-process runs (jax.process_count() > 1): only process 0 locks; the others wait until it has
(or has failed to), so no process touches the workdir before the lock is settled.

A remote WORKDIR (gs://, s3://: irjax/paths.py) cannot hold a kernel lock: an object store has
none, and no lease that its holder's death releases. Its lock is therefore a local lock file
keyed by the URI, $IRJAX_CACHE_DIR/workdir_locks/<sha256 of the URI>.lock, with everything above
unchanged. It keeps out a second run on the same host only; nothing stops a run on another host
from writing into the same remote WORKDIR. That is acceptable because on a pod process 0 is the
workdir's only writer and the one process that locks; starting two jobs on one remote WORKDIR
from two machines is the user's mistake to avoid (the log says so when a remote lock is taken).
"""
from __future__ import annotations

import dataclasses
import datetime
import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from irjax.errors import UserError
from irjax.files import cache_root, published_mode
from irjax.paths import AnyPath, as_path

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
REMOTE_LOCKS_DIR = "workdir_locks"
_HELD: dict[AnyPath, "WorkdirLock"] = {}
_HELD_GUARD = threading.Lock()


class WorkdirLockedError(ValueError, UserError):
    """Another live run holds the workdir's lock; the message names it and what to do.

    A user error (wrong WORKDIR, or a run started twice), not a bug: a ValueError until irjax has
    a common user-error base class."""


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a workdir lock, as written into the lock file."""

    pid: int
    host: str
    started: str  # ISO 8601, UTC
    command: str

    @classmethod
    def current(cls, command: str | None = None) -> LockHolder:
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), started,
                   command if command is not None else " ".join(sys.argv))

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """The holder recorded in a lock file's text; None if empty or unreadable."""
        try:
            record = json.loads(text)
            return cls(int(record["pid"]), str(record["host"]), str(record["started"]),
                       str(record["command"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return (f"pid {self.pid} on host {self.host}, started {self.started}, "
                f"command: {self.command}")


def _read_all(fd: int) -> str:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds WORKDIR/.lock (see the module docstring).

    `previous` is the holder that died without releasing the lock, if this acquisition took it
    over; `reentered` tells that the process already held this workdir (or a parent of it).
    """

    def __init__(self, workdir: str | os.PathLike, command: str | None = None) -> None:
        self.workdir = as_path(workdir)
        self.remote = not isinstance(self.workdir, Path)
        self.path = remote_lock_path(self.workdir) if self.remote else self.workdir / LOCK_NAME
        self.command = command
        self.holder: LockHolder | None = None
        self.previous: LockHolder | None = None
        self.reentered = False
        self._fd: int | None = None
        self._key: AnyPath | None = None

    # ------------------------------------------------------------------ single process
    def _covering(self, key: AnyPath) -> WorkdirLock | None:
        for held_path, lock in _HELD.items():  # a local path never covers a URI, nor vice versa
            if type(key) is type(held_path) and (key == held_path or held_path in key.parents):
                return lock
        return None

    def _lock_file(self) -> None:
        """Takes the OS lock or raises WorkdirLockedError naming the holder."""
        if self.remote:  # the lock never touches the store itself
            log.info("workdir %s is remote: locked through %s, which keeps out other runs on "
                     "this host only (irjax/workdir_lock.py)", self.workdir, self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, published_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = LockHolder.parse(_read_all(fd))
            os.close(fd)
            who = holder.describe() if holder else "a process that has not written its details yet"
            raise WorkdirLockedError(
                f"workdir {self.workdir} is in use by another irjax run ({who}). Wait for it to "
                f"finish, stop it, or choose another WORKDIR; the lock ({self.path}) is released "
                "as soon as that process exits.") from None
        except BaseException:
            os.close(fd)
            raise
        self.previous = LockHolder.parse(_read_all(fd))
        self.holder = LockHolder.current(self.command)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(dataclasses.asdict(self.holder)) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        if self.previous is not None:
            log.warning("took over the lock of %s from a run that ended without releasing it "
                        "(%s); its outputs may be incomplete", self.workdir,
                        self.previous.describe())

    def _unlock_file(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty lock file means "released cleanly"
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ public
    def acquire(self) -> WorkdirLock:
        """Locks the workdir (process 0 of a multi-process run; the others wait for it)."""
        from irjax.parallel.processes import is_logging_process, process_0_outcome

        key = self.workdir if self.remote else Path(os.path.realpath(self.workdir))
        with _HELD_GUARD:
            outer = self._covering(key)
            if outer is not None:  # this process already holds it: nested job
                self.reentered, self.holder = True, outer.holder
                return self
            error: WorkdirLockedError | None = None
            if is_logging_process():
                try:
                    self._lock_file()
                except WorkdirLockedError as e:
                    error = e
            if not process_0_outcome(error is None):
                raise error or WorkdirLockedError(
                    f"process 0 could not lock workdir {self.workdir}: another irjax run holds "
                    "it (process 0's output names it); this process stops too")
            self._key = key
            _HELD[key] = self
        return self

    def release(self) -> None:
        with _HELD_GUARD:
            if self.reentered or self._key is None:
                return
            _HELD.pop(self._key, None)
            self._key = None
            self._unlock_file()

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def remote_lock_path(workdir: AnyPath) -> Path:
    """The local lock file of a remote workdir (module docstring)."""
    key = hashlib.sha256(str(workdir).rstrip("/").encode()).hexdigest()[:32]
    return cache_root() / REMOTE_LOCKS_DIR / f"{key}.lock"

