"""Length-bucketed batching for inference: similar lengths share a batch, shapes stay few.

A transformer's cost grows with the padded length, so padding every batch to the longest text of
the whole collection makes short texts pay for long ones. Sorting by length and cutting batches
from the sorted order keeps padding small; rounding each batch's width up to a multiple (capped at
`max_length`) limits the distinct shapes a jitted function is compiled for to
`max_length / multiple` (plus one for a short final batch).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def round_up(length: int, multiple: int, cap: int | None = None) -> int:
    """Smallest multiple of `multiple` that is >= length (and >= multiple), at most `cap`."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    rounded = max(multiple, -(-int(length) // multiple) * multiple)
    if cap is not None:
        if length > cap:
            raise ValueError(f"length {length} exceeds the cap {cap}; truncate inputs first")
        rounded = min(rounded, cap)
    return rounded


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One batch: which inputs (by original index) and the width to pad them to."""

    indices: np.ndarray  # int64 [k], original positions
    length: int  # padded width; every input here has at most this many tokens

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def length_buckets(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    multiple: int = 32,
    max_length: int | None = None,
) -> list[Bucket]:
    """Cuts inputs, sorted by length, into batches of `batch_size` padded to a bucket width.

    Batches are returned longest first, which surfaces out-of-memory errors early and puts the
    slowest work where a progress bar's estimate is most pessimistic rather than most optimistic.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    # Stable sort, descending, so equal lengths keep their input order.
    order = np.argsort(-lengths, kind="stable")
    buckets = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = round_up(int(lengths[idx].max()), multiple, max_length)
        buckets.append(Bucket(indices=idx, length=width))
    return buckets


def restore_order(outputs: Sequence[np.ndarray], buckets: Sequence[Bucket]) -> np.ndarray:
    """Stacks per-bucket outputs (rows aligned with each bucket's indices) back in input order.

    Extra rows beyond a bucket's size (padding rows added for static shapes) are dropped.
    """
    if len(outputs) != len(buckets):
        raise ValueError(f"got {len(outputs)} outputs for {len(buckets)} buckets")
    n = sum(len(b) for b in buckets)
    if n == 0:
        return np.zeros((0,), dtype=np.float32)
    first = np.asarray(outputs[0])
    result = np.empty((n,) + first.shape[1:], dtype=first.dtype)
    for out, bucket in zip(outputs, buckets):
        out = np.asarray(out)
        if out.shape[0] < len(bucket):
            raise ValueError(f"bucket of {len(bucket)} inputs has only {out.shape[0]} output rows")
        result[bucket.indices] = out[: len(bucket)]
    return result


def padding_stats(lengths: Sequence[int] | np.ndarray, buckets: Sequence[Bucket]) -> dict[str, float]:
    """Real versus padded token counts, to judge a bucketing choice (rows padding excluded)."""
    lengths = np.asarray(lengths)
    real = int(lengths.sum())
    padded = int(sum(len(b) * b.length for b in buckets))
    return {
        "real_tokens": real,
        "padded_tokens": padded,
        "efficiency": real / padded if padded else 1.0,
        "shapes": len({(len(b), b.length) for b in buckets}),
    }


def padded_rows(n: int, batch_size: int, minimum: int = 8) -> int:
    """Rows to pad a batch of `n` to: a power of two (at least `minimum`), at most `batch_size`.

    Only the final, short batch is affected; a few power-of-two sizes bound recompilation
    while wasting less than padding it to a full batch would.
    """
    if n > batch_size:
        raise ValueError(f"batch of {n} exceeds batch_size {batch_size}")
    rows = max(minimum, 1 << max(0, int(n) - 1).bit_length())
    return min(rows, batch_size)
