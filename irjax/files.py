"""Crash-safe file writing: everything irjax writes lands under a temporary name first, then is
renamed into place, so a killed job never leaves a half-written output that looks complete.

Three details matter beyond the rename:

* Permissions. `mkstemp`/`mkdtemp` create 0600/0700 entries (private by design, for temporary
  files); a published output is not temporary, so it gets the mode a plain `open()` would have
  given it: 0666 (files) or 0777 (directories) minus the process umask, typically 0644/0755.
* Leftovers. Temporary names carry the writer's host and pid (`.NAME.HOST-PID.XXXX.tmp`), so a
  later run can tell an orphan of a killed writer (`remove_orphan_temporaries`) from a file a live
  process is still writing; without a pid (or on another host) only age decides.
* Replacing a directory. `atomic_directory` swaps the new directory in with Linux's
  renameat2(RENAME_EXCHANGE): one atomic step, so a reader always finds the old directory or the
  new one, never none. Where the kernel or filesystem refuses the exchange (not Linux, some
  network filesystems) it falls back to two renames with a moment in which the path is missing;
  that fallback is logged at debug level and documented here rather than hidden.

Remote paths (gs://, s3://: irjax/paths.py). An object store has no atomic rename (a "rename"
is a copy and a delete) and no directories, so there the guarantees are these, and readers rely
on them rather than on atomicity:

* `atomic_write_bytes` uploads to a temporary sibling name, then renames it into place: a
  failed or killed upload never carries the final name, but the rename itself is not atomic.
* `atomic_directory` builds the directory in a local staging folder, then deletes the old
  remote directory's completion files, the old directory, and uploads the new one with its
  completion files (the manifest) last. A reader meanwhile finds no manifest and refuses the
  directory instead of reading a mixture; it never sees the old one and the new one at once.
* Every directory irjax publishes piece by piece (embedding shards, index parts) has its own
  completion files written last and checked on read (sizes, sha256): they, not the renames,
  make remote readers safe.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

from irjax.paths import AnyPath, as_path, modified_time, remove_tree

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# `.NAME.HOST-PID.RANDOM.tmp`; hosts are sanitised so the pattern stays unambiguous.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>[0-9]+)\.[^.]+\.tmp$")
_OLD_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # irjax before pids were recorded
ORPHAN_AGE_S = 15 * 60


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


def temporary_prefix(name: str) -> str:
    """The prefix of every temporary sibling of `name` this process creates (see module doc)."""
    return f".{name}.{_host_tag()}-{os.getpid()}."


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is racy)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def published_mode(directory: bool = False) -> int:
    """The mode `open()`/`mkdir()` would give a new entry under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> AnyPath:
    """Writes `data` to `path` via a temporary file in the same directory and an atomic rename
    (on a remote path: a temporary object, then a rename that is not atomic; module doc)."""
    path = as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    publish = _publish_local if isinstance(path, Path) else _publish_remote
    return publish(path, lambda f: f.write(data))


def _publish_local(path: Path, fill: Callable[[BinaryIO], object]) -> Path:
    """Writes a temporary file in `path`'s directory with `fill`, gives it the umask's mode,
    syncs it and renames it onto `path`; on any failure the temporary file is removed."""
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fchmod(f.fileno(), published_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> AnyPath:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _remote_temporary(path: AnyPath) -> AnyPath:
    """A temporary sibling of a remote `path`, named as local temporaries are (module doc)."""
    return path.parent / f"{temporary_prefix(path.name)}{secrets.token_hex(4)}.tmp"


def _publish_remote(path: AnyPath, fill: Callable[[BinaryIO], object]) -> AnyPath:
    """`_publish_local` for a remote `path`: a temporary object filled by `fill`, then a rename
    (not atomic on object stores; module doc); the temporary object is removed on failure."""
    tmp = _remote_temporary(path)
    try:
        with tmp.open("wb") as out:
            fill(out)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def copy_file(source: str | os.PathLike, target: str | os.PathLike,
              chunk_size: int = 8 << 20) -> AnyPath:
    """Copies a file between any two paths (local or remote), in chunks so large files stay
    out of memory, under a temporary name first (`atomic_write_bytes`' guarantees)."""
    source, target = as_path(source), as_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    def fill(out: BinaryIO) -> None:
        with source.open("rb") as src:
            while chunk := src.read(chunk_size):
                out.write(chunk)

    return (_publish_local if isinstance(target, Path) else _publish_remote)(target, fill)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two existing paths; False where the platform cannot (then nothing moved)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, f"exchanging {a} and {b}: {os.strerror(code)}")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, last: Sequence[str] = ()) -> Iterator[Path]:
    """Yields a temporary sibling directory; on success it replaces `path` as a whole.

    Readers see the complete old directory or the complete new one (see the module docstring for
    the one platform fallback). On an exception the temporary directory is removed and any
    previous `path` is left untouched.

    For a remote `path` the yielded directory is a local staging folder (so writers that only
    write local files, faiss and ScaNN, work unchanged), published as the module docstring
    says: `last` names the completion files (e.g. the manifest) uploaded after all others.
    """
    path = as_path(path)
    if not isinstance(path, Path):
        with _remote_directory(path, last) as staging:
            yield staging
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path.name), suffix=".tmp",
                                dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, published_mode(directory=True))
        if path.is_dir() and not path.is_symlink():
            if _exchange(tmp, path):
                shutil.rmtree(tmp, ignore_errors=True)  # now holds the previous contents
                return
            log.debug("renameat2 exchange unavailable for %s; replacing with two renames", path)
            backup = path.with_name(f".{path.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(path, backup)
            os.replace(tmp, path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _remote_directory(path: AnyPath, last: Sequence[str]) -> Iterator[Path]:
    remove_orphan_temporaries(tempfile.gettempdir(), name="irjax_staging")
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix("irjax_staging"), suffix=".tmp"))
    try:
        yield staging
        for name in last:  # the old directory stops claiming to be complete first
            with contextlib.suppress(FileNotFoundError):
                (path / name).unlink(missing_ok=True)
        remove_tree(path)
        files = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
        final = [f for f in files if f.as_posix() in last]
        for relative in [f for f in files if f.as_posix() not in last] + final:
            copy_file(staging / relative, path / relative.as_posix())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_orphan_temporaries(directory: str | os.PathLike, *, name: str | None = None,
                              min_age_s: float = ORPHAN_AGE_S) -> list[AnyPath]:
    """Deletes temporary files/directories in `directory` left by killed writers; returns them.

    An entry is an orphan when its writer (host and pid in its name) is this host's and no longer
    runs. Entries named by another host, or without a pid (older irjax), are orphans once they
    were last modified more than `min_age_s` ago, since their writer's liveness cannot be seen
    from here. Entries of live writers on this host are never touched. With `name`, only
    temporaries of that name are considered, never pid-less ones: for shared folders such as
    the system temp directory, where other programs' files must be left alone. On a remote
    folder whose store keeps no modification times, only this host's dead writers' entries go.
    """
    directory = as_path(directory)
    removed: list[AnyPath] = []
    if not directory.is_dir():
        return removed
    now, host = time.time(), _host_tag()
    for entry in directory.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if name is not None and (match is None or match["name"] != name):
            continue
        if match is None and not _OLD_TEMP_NAME.match(entry.name):
            continue
        try:
            modified = modified_time(entry)
        except FileNotFoundError:
            continue
        if match is not None and match["host"] == host:
            orphan = not _pid_alive(int(match["pid"]))
        else:  # a store that keeps no modification time: never guess that a file is old
            orphan = modified is not None and now - modified > min_age_s
        if not orphan:
            continue
        if not isinstance(entry, Path):
            if entry.is_dir():
                remove_tree(entry)
            else:
                entry.unlink(missing_ok=True)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    if removed:
        log.warning("removed %d temporary file(s) left by killed writers in %s: %s", len(removed),
                    directory, sorted(p.name for p in removed)[:5])
    return removed


def quarantine(path: str | os.PathLike) -> AnyPath:
    """Moves a damaged file aside as `NAME.corrupt-YYYYmmddTHHMMSS[-N]` and returns the new path;
    kept rather than deleted so the damage can be inspected, and out of the way of a rewrite."""
    path = as_path(path)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
        counter += 1
    if isinstance(path, Path):
        os.replace(path, target)
    else:
        path.rename(target)
    return target


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large files stay out of memory."""
    digest = hashlib.sha256()
    with as_path(path).open("rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where irjax keeps caches it can rebuild: $IRJAX_CACHE_DIR, else ~/.cache/irjax."""
    root = os.environ.get("IRJAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                             "irjax")
    return Path(root)
