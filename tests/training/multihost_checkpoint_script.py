"""Body of each process in the two-process checkpoint test (test_checkpoints.py): save a sharded
state twice, damage step 2 on process 0, and restore from process-local shards.

Run by launch/local_multiprocess.py, one copy per process; each prints
`RESULT {json}` with the step it fell back to and the rows of its own shard.

    python launch/local_multiprocess.py --num_processes 2 --devices_per_process 1 -- \
        python tests/training/multihost_checkpoint_script.py /tmp/ckpt
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from irjax.parallel.distributed import initialize_distributed
from irjax.training.checkpoints import Checkpointer


def empty_files(step_dir: Path) -> None:
    """Truncates every file of a saved step to 0 bytes (test_checkpoints' 'all_files_empty')."""
    for path in step_dir.rglob("*"):
        if path.is_file():
            os.truncate(path, 0)


def multihost_fallback_check(directory: str) -> None:
    initialize_distributed()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())

    def make(value: float) -> dict:
        full = np.arange(32, dtype=np.float32).reshape(8, 4) + value
        return {"w": jax.make_array_from_callback((8, 4), rows, lambda index: full[index]),
                "r": jax.make_array_from_callback((), replicated, lambda _: np.float32(value))}

    with Checkpointer(directory, save_every=1) as checkpointer:
        for step in (1, 2):
            checkpointer.save(step, make(step), extra={"position": step})
        checkpointer.wait()
        multihost_utils.sync_global_devices("saved")
        if jax.process_index() == 0:
            empty_files(Path(directory) / "2" / "state")
        multihost_utils.sync_global_devices("damaged")
        step, state, extra = checkpointer.restore_latest(make(0))  # concrete: its shardings are used
        shards = [np.asarray(s.data).tolist() for s in state["w"].addressable_shards]
        resaved = checkpointer.save(2, make(22))
        checkpointer.wait()
        latest = checkpointer.restore_latest(make(0))[0]
    print("RESULT " + json.dumps({"step": step, "extra": extra, "shards": shards, "resaved": resaved,
                                  "latest": latest, "r": float(state["r"].addressable_data(0))}), flush=True)


if __name__ == "__main__":
    multihost_fallback_check(sys.argv[1])
