"""A remote filesystem for tests: `memory://bucket/...` URIs served by fsspec's in-memory
filesystem through etils.epath, as gs:// is served on Cloud TPU (where gcsfs is installed).

etils knows a fixed set of URI schemes (gs, s3, az, hf: etils/epath/gpath.py `_URI_SCHEMES`,
`_URI_PREFIXES`, `_URI_MAP_ROOT`, `_PREFIX_TO_BACKEND`, and register.py's prefix-to-class map),
and its fsspec backend picks the filesystem from the prefix, falling back to the local one. So
the fixture adds "memory" to every one of those tables (undone after the test) with a backend
whose filesystem is fsspec's memory filesystem. Like an object store it has no atomic rename,
no kernel locks and no modification times, and it lives in this process only: tests that use
it run jobs in-process, not through `python -m irjax.main`.
"""
from __future__ import annotations

import uuid
from typing import Iterator

import fsspec
from etils.epath import backend as backend_lib
from etils.epath import gpath, register

SCHEME = "memory"


class _MemoryBackend(backend_lib._FileSystemSpecBackend):  # etils has no public base class
    def fs(self, path):  # type: ignore[override]
        return fsspec.filesystem(SCHEME)


def serve_memory_scheme(monkeypatch) -> Iterator[str]:
    """Registers memory:// with etils for the test (through `monkeypatch`) and yields a fresh
    `memory://BUCKET` URI (no trailing slash), removed afterwards: the `memory_bucket`
    fixture of tests/conftest.py."""
    prefix = f"{SCHEME}://"
    monkeypatch.setattr(gpath, "_URI_PREFIXES", (*gpath._URI_PREFIXES, prefix))
    monkeypatch.setattr(gpath, "_URI_SCHEMES", gpath._URI_SCHEMES | {SCHEME})
    monkeypatch.setitem(gpath._URI_MAP_ROOT, prefix, f"/{SCHEME}/")
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, SCHEME, _MemoryBackend())
    monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, prefix, gpath.PosixGPath)
    bucket = f"{prefix}irjax-test-{uuid.uuid4().hex[:8]}"
    yield bucket
    filesystem = fsspec.filesystem(SCHEME)
    if filesystem.exists(bucket):
        filesystem.rm(bucket, recursive=True)


def upload(folder, uri: str) -> str:
    """Copies a local folder's files to `uri` (as `gsutil cp -r` would); returns `uri`."""
    from pathlib import Path

    from irjax.files import copy_file

    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            copy_file(path, f"{uri}/{path.relative_to(folder).as_posix()}")
    return uri
