"""Which slice of the work each process owns, and which process writes.

Plain arithmetic over `jax.process_index()` / `jax.process_count()`, kept apart from the mesh so
that the data layer (which reads only its own rows of every global batch) can use it.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import jax

if TYPE_CHECKING:
    import numpy as np


def process_shard(num_items: int, process_index: int | None = None,
                  process_count: int | None = None) -> slice:
    """The contiguous block of `num_items` this process reads: process p gets items
    [p*n/P, (p+1)*n/P), with the first n % P processes taking one extra item.

    Contiguous (not strided) because `create_mesh` puts process p's devices on the p-th block
    of the data axis, so this slice of a global batch is exactly what `global_batch` expects.
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process_index must be in [0, {count}), got {index}")
    if num_items < 0:
        raise ValueError(f"num_items must be >= 0, got {num_items}")
    base, extra = divmod(num_items, count)
    start = index * base + min(index, extra)
    return slice(start, start + base + (1 if index < extra else 0))


def is_logging_process() -> bool:
    """Only process 0 writes logs, metrics and checkpoints metadata."""
    return jax.process_index() == 0


def process_0_outcome(ok: bool) -> bool:
    """Process 0's `ok`, on every process; a barrier, since the others wait for process 0 to
    decide (e.g. whether it got the workdir lock). Every process must call it; only process 0's
    argument counts. Without other processes it returns `ok` at once."""
    if jax.process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils

    flag = np.int32(1 if ok else 0)
    return bool(multihost_utils.broadcast_one_to_all(flag))


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (nothing to wait for alone)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def allgather_bytes(payload: bytes) -> list[bytes]:
    """Every process's `payload`, in process order (lengths may differ)."""
    if jax.process_count() == 1:
        return [payload]
    import numpy as np
    from jax.experimental import multihost_utils

    lengths = np.asarray(multihost_utils.process_allgather(np.asarray(len(payload), np.int64)))
    padded = np.zeros(max(1, int(lengths.max())), np.uint8)
    padded[:len(payload)] = np.frombuffer(payload, np.uint8)
    every = np.asarray(multihost_utils.process_allgather(padded))
    return [bytes(row[:int(n)]) for row, n in zip(every, lengths)]


def allgather_json(value: Any) -> list[Any]:
    """Every process's JSON-serialisable `value`, in process order."""
    raw = json.dumps(value, sort_keys=True).encode()
    return [json.loads(item) for item in allgather_bytes(raw)]


def allgather_arrays(array: "np.ndarray") -> list["np.ndarray"]:
    """Every process's numpy array (any shape and dtype, may differ), in process order."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return [np.load(io.BytesIO(item), allow_pickle=False)
            for item in allgather_bytes(buffer.getvalue())]


def host_copy(tree: Any) -> Any:
    """Every array leaf as a whole numpy array on this host: fully addressable and replicated
    arrays locally, arrays sharded over other processes gathered (e.g. a trained model's params
    on the training mesh, before inference moves them to a process-local mesh)."""
    import numpy as np

    def whole(x: Any) -> Any:
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(whole, tree)
