"""A cheap, order-independent fingerprint of a tree of (possibly sharded) arrays.

Checkpoints store it to detect corruption on restore; embedding caches key on it so that the
vectors of one set of parameters are never served for another. Wrapping integer sums of the
arrays' bits do not depend on reduction order, so every sharding (and every process of a
multi-process run) gets the same numbers.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = 0x9E3779B1  # odd, so every per-position weight below is odd


def _as_words(x: jax.Array) -> jax.Array | None:
    """The leaf's bits as uint32 words (64-bit leaves gain a trailing axis of 2); None if unsupported."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = jnp.dtype(x.dtype).itemsize
    if jnp.issubdtype(x.dtype, jnp.complexfloating) or size not in (1, 2, 4, 8):
        return None
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _leaf_fingerprint(x: jax.Array) -> jax.Array | None:
    """[sum of words, position-weighted sum of words], both mod 2**32.

    Wrapping integer sums do not depend on reduction order, so the result is the same however
    the array is sharded. Any single flipped bit changes the plain sum; the odd weights make a
    swap of two values change the weighted one.
    """
    words = _as_words(x)
    if words is None:
        return None
    index = jnp.zeros(words.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(words.ndim)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * jnp.uint32(stride % 2**32)
        stride *= words.shape[axis]
    weights = (index * jnp.uint32(2) + jnp.uint32(1)) * jnp.uint32(_GOLDEN)
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * weights, dtype=jnp.uint32)])


# One jit per leaf rather than per tree: leaves may live on different device sets, and the
# compiled kernels are shared by all leaves of the same shape, dtype and sharding.
_fingerprint_leaf = jax.jit(_leaf_fingerprint)


def _array_leaves(tree: Any) -> list[tuple[str, Any]]:
    """(path, leaf) for every leaf the fingerprint covers, in flatten order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = []
    for path, leaf in flat:
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float)):
            out.append((jax.tree_util.keystr(path), leaf))
    return out


def _host_leaf_fingerprint(x: np.ndarray) -> tuple[int, int] | None:
    """`_leaf_fingerprint` in numpy, for leaves this process holds whole; None where the dtype
    has no 1/2/4-byte bit view (those go through the device path). Same sums, bit for bit."""
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    size = x.dtype.itemsize
    if x.dtype.kind == "c" or size not in (1, 2, 4):
        return None
    words = np.ascontiguousarray(x).view({1: np.uint8, 2: np.uint16, 4: np.uint32}[size])
    words = words.reshape(-1).astype(np.uint64)
    index = np.arange(words.size, dtype=np.uint64) % np.uint64(2**32)
    weights = ((index * np.uint64(2) + np.uint64(1)) * np.uint64(_GOLDEN)) % np.uint64(2**32)
    # uint64 sums wrap mod 2**64, a multiple of 2**32, so the final mod is exact.
    plain = int(np.sum(words, dtype=np.uint64)) % 2**32
    weighted = int(np.sum(words * weights, dtype=np.uint64)) % 2**32
    return plain, weighted


def _is_whole_here(leaf: Any) -> bool:
    return (jax.process_count() == 1 and (not isinstance(leaf, jax.Array)
                                          or leaf.is_fully_addressable))


def fingerprint(tree: Any) -> list[list[Any]]:
    """One [path, dtype, shape, sum, weighted_sum] row per array leaf (sums None if unsupported).

    In a single process the sums are computed on the host: per-leaf device programs with
    cross-device reductions deadlocked XLA's CPU collectives on an oversubscribed machine
    (8 simulated devices on 2 cores). Multi-process runs reduce on device, so every process gets
    the global sums; both paths give identical numbers (tests/training/test_checkpoints.py)."""
    leaves = _array_leaves(tree)
    arrays = [jnp.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf for _, leaf in leaves]
    host_sums: list[tuple[int, int] | None] = []
    device: dict[int, Any] = {}
    for i, array in enumerate(arrays):
        pair = (_host_leaf_fingerprint(np.asarray(jax.device_get(array)))
                if _is_whole_here(array) else None)
        host_sums.append(pair)
        if pair is None:
            device[i] = _fingerprint_leaf(array)  # None for dtypes without a bit view
    # The device sums are replicated; this process's copy suffices. One transfer for all.
    fetched = jax.device_get({i: None if p is None else p.addressable_data(0)
                              for i, p in device.items()})
    host = [fetched[i] if i in fetched else pair for i, pair in enumerate(host_sums)]
    rows = []
    for (path, _), array, pair in zip(leaves, arrays, host):
        values = [None, None] if pair is None else [int(v) for v in pair]
        rows.append([path, str(array.dtype), list(array.shape), *values])
    return rows


def params_digest(tree: Any) -> str:
    """sha256 hex of `fingerprint(tree)`: a short key for a set of parameter values."""
    return hashlib.sha256(json.dumps(fingerprint(tree)).encode()).hexdigest()
