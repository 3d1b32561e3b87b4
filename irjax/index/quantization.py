"""Symmetric per-row int8 quantisation of float32 vectors, shared by the stores that keep vectors
for exact rescoring (the token index's `doc_tokens`, the sharded ScaNN index's rescoring file):
dim + 4 bytes a row instead of 4 * dim."""
from __future__ import annotations

import numpy as np


def quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 rows, float32 scale per row) with scale = max|x| / 127; all-zero rows get scale 1 so
    they decode to zero. Decode as `q * scale[:, None]`."""
    x = np.asarray(vectors, dtype=np.float32)
    scale = np.abs(x).max(axis=1) / 127.0 if x.size else np.zeros(len(x), np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale
