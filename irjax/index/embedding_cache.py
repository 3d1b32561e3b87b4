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

from irjax.files import atomic_write_bytes

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


def cached_embeddings(
    cache_dir: str | os.PathLike | None,
    key: str,
    ids: Sequence[str],
    compute: Callable[[], np.ndarray],
) -> np.ndarray:
    """Returns embeddings for `ids` from `cache_dir/key.npz`, computing and storing them on a miss.

    A cached file whose ids do not match (a different corpus under a colliding key, or a file
    left by another version) is recomputed and replaced, with a warning, never used.
    """
    path = Path(cache_dir or default_cache_dir()) / f"{key}.npz"
    digest = _ids_digest(ids)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["ids_sha256"]) == digest and data["vectors"].shape[0] == len(ids):
                    log.info("embedding cache hit: %s", path)
                    return data["vectors"]
            log.warning("embedding cache %s does not match this corpus; recomputing", path)
        except (OSError, KeyError, ValueError) as e:
            log.warning("embedding cache %s is unreadable (%s); recomputing", path, e)
    vectors = np.asarray(compute(), dtype=np.float32)
    if vectors.shape[0] != len(ids):
        raise ValueError(f"computed {vectors.shape[0]} embeddings for {len(ids)} ids")
    buffer = io.BytesIO()
    np.savez(buffer, vectors=vectors, ids_sha256=np.asarray(digest))
    atomic_write_bytes(path, buffer.getvalue())
    log.info("embedding cache stored: %s", path)
    return vectors
