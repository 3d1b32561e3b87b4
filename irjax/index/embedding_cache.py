"""A disk cache for corpus embeddings keyed by model and data, so re-running an evaluation or
switching index backends does not re-encode the corpus."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from irjax.files import atomic_write_bytes, quarantine, remove_orphan_temporaries

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    root = os.environ.get("IRJAX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "irjax")
    return Path(root) / "embeddings"


def cache_key(**parts: str) -> str:
    """A stable key from named parts (model fingerprint, collection fingerprint, ...)."""
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


class _Damaged(Exception):
    """A cache file that cannot be read back as an embedding matrix."""


def _read_cached(path: Path, digest: str, count: int) -> np.ndarray | None:
    """The cached vectors, None if they belong to other ids; raises _Damaged if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if set(data.files) != {"vectors", "ids_sha256"}:
                raise _Damaged(f"holds arrays {sorted(data.files)}, not vectors and ids_sha256")
            stored_digest = str(data["ids_sha256"])
            vectors = np.asarray(data["vectors"])  # reads (and CRC-checks) the whole array
    except _Damaged:
        raise
    except Exception as e:  # noqa: BLE001 - zip, zlib, npy header, EOF, OS errors: all damage
        raise _Damaged(f"{type(e).__name__}: {e}") from None
    if vectors.ndim != 2 or vectors.dtype.kind != "f":
        raise _Damaged(f"vectors have shape {vectors.shape} and dtype {vectors.dtype}, not a "
                       "float matrix [documents, dim]")
    if stored_digest != digest or vectors.shape[0] != count:
        return None
    return vectors


def cached_embeddings(
    cache_dir: str | os.PathLike | None,
    key: str,
    ids: Sequence[str],
    compute: Callable[[], np.ndarray],
) -> np.ndarray:
    """Returns embeddings for `ids` from `cache_dir/key.npz`, computing and storing them on a miss.

    A cache repairs itself rather than failing: a file that cannot be read back (empty,
    truncated, failing its zip CRC, not a zip, other arrays or shapes) is moved aside as
    `<key>.npz.corrupt-<time>` with a warning naming it, and the vectors are recomputed. A
    readable file whose ids do not match (a different corpus under a colliding key, or a file
    left by another version) is recomputed and replaced, with a warning, never used. Temporary
    files of writers killed mid-write are deleted (files.remove_orphan_temporaries).
    """
    directory = Path(cache_dir or default_cache_dir())
    path = directory / f"{key}.npz"
    remove_orphan_temporaries(directory)
    digest = _ids_digest(ids)
    if path.exists():
        try:
            vectors = _read_cached(path, digest, len(ids))
        except _Damaged as e:
            moved = quarantine(path)
            log.warning("embedding cache %s is damaged (%s); moved it to %s and recomputing",
                        path, e, moved.name)
        else:
            if vectors is not None:
                log.info("embedding cache hit: %s", path)
                return vectors
            log.warning("embedding cache %s does not match this corpus; recomputing", path)
    vectors = np.asarray(compute(), dtype=np.float32)
    if vectors.shape[0] != len(ids):
        raise ValueError(f"computed {vectors.shape[0]} embeddings for {len(ids)} ids")
    buffer = io.BytesIO()
    np.savez(buffer, vectors=vectors, ids_sha256=np.asarray(digest))
    atomic_write_bytes(path, buffer.getvalue())
    log.info("embedding cache stored: %s", path)
    return vectors
