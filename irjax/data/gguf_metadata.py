"""Reads the key/value metadata of a GGUF file (llama.cpp's format), without its tensors.

Why not `gguf.GGUFReader`: it parses the whole file up front and makes a numpy view per array
element, which for Gemma 3's 262,144-token vocabulary took 24 s on this project's machine; the
tokenizer needs only the metadata, which this reader walks once with the `gguf` package's
constants (magic, versions, value types) in well under a second. Numeric arrays come back as
numpy arrays, string arrays as lists of str. `tests/data/test_gguf_tokenizer.py` checks it
against `GGUFReader` on a file written by `gguf.GGUFWriter`.

Layout (little-endian, versions 2 and 3): magic, version u32, tensor count u64, KV count u64,
then per KV a string key (u64 length + UTF-8 bytes), a value type u32 and the value; an array
value is an item type u32, a count u64 and the items.
"""
from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGUF_MAGIC, GGUFValueType

from irjax.errors import InputFileError

SUPPORTED_VERSIONS = (2, 3)

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


class _Cursor:
    """A read position in the mapped file; every read checks the file is long enough."""

    def __init__(self, buffer: mmap.mmap, path: Path) -> None:
        self.buffer, self.path, self.offset = buffer, path, 0

    def take(self, size: int) -> memoryview:
        end = self.offset + size
        if size < 0 or end > len(self.buffer):
            raise InputFileError(f"{self.path}: truncated GGUF header (needed {size} bytes at "
                                 f"offset {self.offset}, file has {len(self.buffer)}); "
                                 "fetch the file again")
        view = memoryview(self.buffer)[self.offset:end]
        self.offset = end
        return view

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self, what: str) -> str:
        size = self.scalar("<Q")
        raw = self.take(size)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as error:
            raise InputFileError(f"{self.path}: {what} is not valid UTF-8 ({error})") from None


def _value_type(code: int, path: Path, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(code)
    except ValueError:
        raise InputFileError(f"{path}: metadata key {key!r} has unknown value type {code}") from None


def _read_value(cursor: _Cursor, kind: GGUFValueType, key: str) -> Any:
    if kind == GGUFValueType.STRING:
        return cursor.string(f"metadata key {key!r}")
    if kind in _SCALARS:
        return cursor.scalar(_SCALARS[kind])
    if kind == GGUFValueType.ARRAY:
        item = _value_type(cursor.scalar("<I"), cursor.path, key)
        count = cursor.scalar("<Q")
        if item in _SCALARS:
            dtype = np.dtype(_SCALARS[item])
            return np.frombuffer(cursor.take(count * dtype.itemsize), dtype=dtype).copy()
        if item == GGUFValueType.STRING:
            return [cursor.string(f"{key}[{i}]") for i in range(count)]
        return [_read_value(cursor, item, f"{key}[{i}]") for i in range(count)]
    raise InputFileError(f"{cursor.path}: metadata key {key!r} has unsupported type {kind.name}")


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Every metadata key of the GGUF file at `path` with its value (tensors are not read)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such GGUF file")
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size < 24:
            raise InputFileError(f"{path}: too short to be a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            cursor = _Cursor(buffer, path)
            try:
                return _read_all(cursor)
            finally:
                del cursor  # release the memoryviews before the map closes


def _read_all(cursor: _Cursor) -> dict[str, Any]:
    path = cursor.path
    if cursor.scalar("<I") != GGUF_MAGIC:
        raise InputFileError(f"{path}: not a GGUF file (bad magic)")
    version = cursor.scalar("<I")
    if version not in SUPPORTED_VERSIONS:
        hint = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
        raise InputFileError(f"{path}: GGUF version {version}{hint} is not supported; "
                             f"supported: {SUPPORTED_VERSIONS}")
    cursor.scalar("<Q")  # tensor count: the tensors are not read here
    kv_count = cursor.scalar("<Q")
    metadata: dict[str, Any] = {"GGUF.version": version}
    for _ in range(kv_count):
        key = cursor.string("a metadata key")
        kind = _value_type(cursor.scalar("<I"), path, key)
        metadata[key] = _read_value(cursor, kind, key)
    return metadata
