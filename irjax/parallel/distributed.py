"""Joins this process to a multi-process JAX job; a no-op when there is only one process.

Multi-process runs on CPU (tests, laptops) need the gloo collectives so that cross-process
all-reduces work over localhost TCP; accelerators bring their own. Arguments left as None are
read from IRJAX_COORDINATOR / IRJAX_NUM_PROCESSES / IRJAX_PROCESS_ID, which is what
launch/local_multiprocess.py sets, so training entry points can call this with no arguments.
It must run before anything touches a JAX device (the device count is fixed then).
"""
from __future__ import annotations

import os

import jax

ENV_COORDINATOR = "IRJAX_COORDINATOR"
ENV_NUM_PROCESSES = "IRJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "IRJAX_PROCESS_ID"
# IRJAX_DISTRIBUTED=auto: let JAX discover the cluster itself (Cloud TPU VMs, SLURM), as the
# launchers in launch/ do; no coordinator variables are needed then.
ENV_AUTO = "IRJAX_DISTRIBUTED"

# In jax 0.10.2 the flag is 'jax_cpu_collectives_implementation' (values 'gloo', 'mpi', 'none').
CPU_COLLECTIVES_FLAG = "jax_cpu_collectives_implementation"


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer") from None


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           local_device_count: int | None = None,
                           *, timeout_s: int = 120) -> bool:
    """Calls `jax.distributed.initialize` with gloo CPU collectives; returns whether it did.

    local_device_count, when given, sets the number of (simulated) CPU devices of this process
    through `jax_num_cpu_devices`, the config equivalent of
    XLA_FLAGS=--xla_force_host_platform_device_count. With one process (or none configured)
    nothing else happens and False is returned, so single-device code paths stay untouched.
    """
    if os.environ.get(ENV_AUTO, "").lower() == "auto" and coordinator_address is None:
        if not jax.distributed.is_initialized():
            jax.distributed.initialize()
        return True
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)

    if local_device_count is not None:
        if local_device_count < 1:
            raise ValueError(f"local_device_count must be >= 1, got {local_device_count}")
        jax.config.update("jax_num_cpu_devices", local_device_count)

    if num_processes is None or num_processes == 1:
        return False
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if coordinator_address is None or process_id is None:
        raise ValueError(
            f"num_processes={num_processes} needs a coordinator address and this process's id: "
            f"pass them or set {ENV_COORDINATOR}=host:port and {ENV_PROCESS_ID}=0..."
            f"{num_processes - 1} (launch/local_multiprocess.py sets both)")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    if jax.distributed.is_initialized():
        if jax.process_count() != num_processes or jax.process_index() != process_id:
            raise RuntimeError(
                f"JAX is already initialized as process {jax.process_index()} of "
                f"{jax.process_count()}, not {process_id} of {num_processes}")
        return True

    jax.config.update(CPU_COLLECTIVES_FLAG, "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
    )
    return True
