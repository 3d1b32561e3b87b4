"""Local paths and remote URIs (gs://, s3://, ...) behind one pathlib-like type.

A pod job reads its data and writes its workdir, embeddings and indexes on an object store
(gs:// on Cloud TPU), as t5x and orbax do, so nothing has to be copied to or from each host.
`as_path` turns whatever a config or a caller gives into

* a `pathlib.Path` for a local path, exactly what irjax used before remote paths existed, so
  local files are read and written by the same code as always, and
* an `etils.epath.Path` for a URI `scheme://...`: the path type orbax uses, with the pathlib
  methods irjax needs (`/`, `open`, `read_bytes`, `exists`, `iterdir`, `stat`, `rename`, ...),
  served by tf.io.gfile where TensorFlow is installed, else by fsspec (gs:// then needs
  `pip install gcsfs`, s3:// needs `s3fs`).

etils is imported only when a URI is seen, so local runs never load it. What object stores
cannot do (an atomic rename, a kernel lock, appending, a local file for C++ readers) is handled
where it matters: irjax/files.py (writing), irjax/workdir_lock.py (locking), irjax/index/base.py
(faiss and ScaNN read local copies). Never wrap a path in `pathlib.Path(...)` in code that may
see a URI: `Path('gs://b/x')` is the local relative folder `gs:/b/x`; use `as_path`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Union

from irjax.errors import UserError

if TYPE_CHECKING:  # imported lazily at run time (module docstring)
    from etils import epath

AnyPath = Union[Path, "epath.Path"]
"""A local `pathlib.Path` or a remote `etils.epath.Path`, as `as_path` returns them."""

_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


class UnsupportedPathError(ValueError, UserError):
    """A URI whose scheme no installed filesystem serves; the message says what to install."""


def is_uri(path: str | os.PathLike) -> bool:
    """Whether `path` is written as `scheme://...` (a remote location), not a local path."""
    return _URI.match(os.fspath(path)) is not None


def as_path(path: str | os.PathLike) -> AnyPath:
    """`pathlib.Path` for a local path, `etils.epath.Path` for a URI (module docstring).

    A local epath or other os.PathLike becomes a plain `pathlib.Path`, so local code paths see
    the type they always saw."""
    if isinstance(path, Path):
        return path
    text = os.fspath(path)
    if not is_uri(text):
        return Path(text)
    from etils import epath

    try:
        return epath.Path(text)
    except KeyError:  # etils keeps a registry of URI prefixes and knows no other scheme
        scheme = _URI.match(text)["scheme"]  # type: ignore[index]
        raise UnsupportedPathError(
            f"{text}: no filesystem for {scheme}:// URIs; irjax reaches remote paths through "
            "etils.epath, which serves gs://, s3://, az:// and hf:// (with gcsfs, s3fs, adlfs or "
            "huggingface_hub installed). Use one of those or a local path.") from None


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` lives on a remote filesystem (a URI), not on a local disk."""
    return not isinstance(as_path(path), Path)


def absolute(path: str | os.PathLike) -> AnyPath:
    """A local path made absolute (symlinks kept, as os.path.abspath does); a URI unchanged."""
    path = as_path(path)
    return Path(os.path.abspath(path)) if isinstance(path, Path) else path


def file_size(path: AnyPath) -> int:
    """Size in bytes of a file (etils' stat has `length` where os.stat has `st_size`)."""
    if isinstance(path, Path):
        return path.stat().st_size
    return int(path.stat().length)


def modified_time(path: AnyPath) -> float | None:
    """Last modification time in seconds since the epoch; None where the store does not say
    (etils reports 0 then: fsspec's memory and s3 filesystems give no `mtime`)."""
    if isinstance(path, Path):
        return path.lstat().st_mtime
    mtime = path.stat().mtime
    return float(mtime) if mtime else None


def walk(top: AnyPath) -> Iterator[tuple[AnyPath, list[str], list[str]]]:
    """`os.walk` for both kinds of path: (folder, sub-folder names, file names), top-down; the
    caller may prune the sub-folder list in place, as with os.walk.

    Remote folders are listed with `iterdir` and one `is_dir` per entry rather than with
    etils' own `walk`, whose fsspec backend yields folders without their gs:// prefix."""
    if isinstance(top, Path):
        for root, dirs, files in os.walk(top):
            yield Path(root), dirs, files
        return
    if not top.is_dir():
        return
    entries = list(top.iterdir())
    dirs = sorted(e.name for e in entries if e.is_dir())
    files = sorted(e.name for e in entries if e.name not in dirs)
    yield top, dirs, files
    for name in dirs:
        yield from walk(top / name)


def remove_tree(path: AnyPath) -> None:
    """Removes a folder and everything in it; nothing happens if it does not exist (errors on
    the way are ignored, as `shutil.rmtree(ignore_errors=True)` does, which is what runs
    locally)."""
    if isinstance(path, Path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        if path.exists():
            path.rmtree()
    except OSError:
        pass
