"""A toy regression trained by the real Trainer; importable by tests and runnable as a script.

Run as a script (in a subprocess, so the device count and process count can be chosen, and so
it can be killed with SIGKILL), it trains, then process 0 prints one line
`RESULT {json}` with the gathered final params, the per-step losses read back from
metrics.jsonl, and where it resumed from. With --announce the data iterator prints
`batch <n>` (flushed) as it hands out the n-th batch, which is what the kill tests wait for.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python toy_train_script.py \
        --workdir /tmp/w --steps 3 --data 4 --model 2
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
NUM_EXAMPLES, GLOBAL_BATCH, DIM, HIDDEN = 64, 16, 4, 8


class ToyBatches:
    """A fixed synthetic dataset, reshuffled each epoch from (seed, epoch); this process gets
    its `process_shard` of every global batch. The state is three ints, like a grain position."""

    def __init__(self, seed: int = 0, nan_at: int | None = None, announce: bool = False,
                 process_index: int = 0, process_count: int = 1, delay_s: float = 0.0) -> None:
        rng = np.random.default_rng(1234)
        self.x = rng.normal(size=(NUM_EXAMPLES, DIM)).astype(np.float32)
        self.y = np.tanh(self.x @ np.array([0.5, -1.0, 0.25, 0.75], np.float32))[:, None]
        self.seed, self.nan_at, self.announce, self.delay_s = seed, nan_at, announce, delay_s
        self.epoch, self.position, self.served = 0, 0, 0
        from irjax.parallel.processes import process_shard
        self.rows = process_shard(GLOBAL_BATCH, process_index, process_count)

    def __iter__(self) -> ToyBatches:
        return self

    def get_state(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "served": self.served}

    def set_state(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"state of data seed {state['seed']} given to seed {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.served = int(state["served"])

    def __next__(self) -> dict[str, np.ndarray]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(NUM_EXAMPLES)
        chosen = order[self.position:self.position + GLOBAL_BATCH][self.rows]
        self.position += GLOBAL_BATCH
        if self.position >= NUM_EXAMPLES:
            self.epoch, self.position = self.epoch + 1, 0
        self.served += 1
        x = self.x[chosen].copy()
        if self.served == self.nan_at:
            x[0, 0] = np.nan
        if self.announce:
            print(f"batch {self.served}", flush=True)
        if self.delay_s:
            import time
            time.sleep(self.delay_s)
        return {"x": x, "y": self.y[chosen]}

    def example(self) -> dict[str, np.ndarray]:
        n = self.rows.stop - self.rows.start
        return {"x": np.zeros((n, DIM), np.float32), "y": np.zeros((n, 1), np.float32)}


def make_model(dropout: float = 0.1):
    """A TrainableModel: Dense -> LayerNorm -> gelu -> Dense, every param logically named.
    Noise on the hidden layer (from the step rng) makes the rng part of what must be exact."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    def named(init, names):
        return nn.with_logical_partitioning(init, names)

    class Regressor(nn.Module):
        @nn.compact
        def __call__(self, x, rng=None):
            h = nn.Dense(HIDDEN, kernel_init=named(nn.initializers.normal(0.5), ("embed", "mlp")),
                         bias_init=named(nn.initializers.zeros_init(), ("mlp",)), name="wi")(x)
            h = nn.LayerNorm(scale_init=named(nn.initializers.ones_init(), ("mlp",)),
                             bias_init=named(nn.initializers.zeros_init(), ("mlp",)),
                             name="norm")(h)
            h = nn.with_logical_constraint(nn.gelu(h), ("batch", "mlp"))
            if rng is not None:
                h = h * (1 + dropout * jax.random.normal(rng, h.shape))
            return nn.Dense(1, kernel_init=named(nn.initializers.normal(0.5), ("mlp", None)),
                            bias_init=named(nn.initializers.zeros_init(), (None,)), name="wo")(h)

    class ToyModel:
        module = Regressor()

        def init_variables(self, rng, batch):
            return self.module.init(rng, batch["x"])["params"]

        def loss(self, params, batch, rng):
            pred = self.module.apply({"params": params}, batch["x"], rng)
            loss = jnp.mean((pred - batch["y"]) ** 2)
            return loss, {"mse": loss, "pred_mean": jnp.mean(pred)}

    return ToyModel()


def flat_params(params) -> dict[str, list[float]]:
    """Gathered params as {path: flat list}, from every process's point of view."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() > 1:
        params = multihost_utils.process_allgather(params, tiled=True)
    return {jax.tree_util.keystr(p): np.asarray(v, np.float64).ravel().tolist()
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def read_losses(workdir: Path) -> dict[int, float]:
    """Last logged loss of each step (a resumed run logs the replayed steps again)."""
    losses = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            losses[record["step"]] = record["loss"]
    return losses


def run(args: argparse.Namespace, workdir: Path, mesh=None) -> dict[str, Any]:
    """One Trainer run on a (data, model) mesh; returns what the tests compare."""
    import jax

    from irjax.training.optimizer import OptimizerConfig
    from irjax.training.trainer import Trainer
    from irjax.training.trainer_config import TrainerConfig

    data = ToyBatches(nan_at=args.nan_at, announce=args.announce,
                      process_index=jax.process_index(), process_count=jax.process_count(),
                      delay_s=args.batch_delay)
    optimizer = OptimizerConfig(learning_rate=0.05, warmup_steps=min(2, args.steps),
                                weight_decay=0.01)
    config = TrainerConfig(num_steps=args.steps, mesh_shape=(args.data, args.model), seed=3,
                           log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                           keep_checkpoints=3, async_checkpoints=not args.sync,
                           progress_bar=False)
    trainer = Trainer(make_model(), workdir, config, optimizer, mesh=mesh, console=None)
    result = trainer.train(data, data.example())
    kernel = result.params["wi"]["kernel"]
    return {"params": flat_params(result.params), "step": result.step,
            "losses": read_losses(workdir) if jax.process_index() == 0 else {},
            "resumed_from": result.resumed_from, "start_step": result.start_step,
            "devices": int(trainer.mesh.devices.size), "processes": jax.process_count(),
            "wi_kernel_spec": [None if a is None else str(a) for a in kernel.sharding.spec]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--data", type=int, default=-1)
    parser.add_argument("--model", type=int, default=1)
    parser.add_argument("--checkpoint_every", type=int, default=1000)
    parser.add_argument("--log_every", type=int, default=1)
    parser.add_argument("--sync", action="store_true", help="synchronous checkpoint saves")
    parser.add_argument("--nan_at", type=int, default=None)
    parser.add_argument("--announce", action="store_true")
    parser.add_argument("--batch_delay", type=float, default=0.0, help="seconds per batch")
    parser.add_argument("--lock", action="store_true",
                        help="run under irjax.workdir.workdir_transaction (lock + status.json)")
    parser.add_argument("--reference", action="store_true",
                        help="also train on a 1-device mesh (in WORKDIR/reference) in this process")
    args = parser.parse_args(argv)

    from irjax.parallel.distributed import initialize_distributed
    initialize_distributed()  # reads IRJAX_* set by launch/local_multiprocess.py
    import jax
    jax.config.update("jax_compilation_cache_dir", str(ROOT / ".cache" / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

    from irjax.parallel.partitioning import create_mesh
    from irjax.parallel.processes import is_logging_process

    import contextlib
    from irjax.workdir import workdir_transaction
    with workdir_transaction(args.workdir) if args.lock else contextlib.nullcontext():
        result = {"sharded": run(args, args.workdir)}
        if args.reference:
            one = create_mesh(1, 1, devices=jax.devices()[:1])
            result["reference"] = run(args, args.workdir / "reference", mesh=one)
    if is_logging_process():
        print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
