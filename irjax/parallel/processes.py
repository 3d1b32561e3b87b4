"""Which slice of the work each process owns, and which process writes.

Plain arithmetic over `jax.process_index()` / `jax.process_count()`, kept apart from the mesh so
that the data layer (which reads only its own rows of every global batch) can use it.
"""
from __future__ import annotations

import jax


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


def sync_processes(name: str) -> None:
    """Waits until every process has reached the point called `name`; a no-op for one process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
