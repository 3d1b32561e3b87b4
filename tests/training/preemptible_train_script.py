"""A tiny deterministic trainer that checkpoints every step and resumes from its workdir.

test_checkpoints.py kills it with SIGKILL at random points and checks that the resumed runs
end with exactly the parameters, and walk exactly the loss trajectory, of an uninterrupted run.
Determinism comes from a seeded data order (reshuffled per epoch from (seed, epoch)) whose
position is saved in the checkpoint's `extra`, and from restoring params and Adam state exactly.

Output protocol, one flushed line each: `resumed <step> <source>`, then per step
`step <n> loss <float.hex>` and (when a save was started) `saved <n>`, and finally `done`.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from irjax.files import atomic_write_bytes
from irjax.training.checkpoints import Checkpointer
from irjax.training.resume import resume_state

NUM_EXAMPLES, BATCH, DIM, HIDDEN = 24, 6, 3, 8


class ShuffledBatches:
    """Batches of a fixed synthetic dataset, reshuffled each epoch; its state is three ints."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(NUM_EXAMPLES, DIM)).astype(np.float32)
        self.y = (np.sin(self.x).sum(axis=1, keepdims=True)).astype(np.float32)
        self.seed, self.epoch, self.position = seed, 0, 0

    def state(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def set_state(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"checkpoint was written with data seed {state['seed']}, not {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(NUM_EXAMPLES)
        rows = order[self.position:self.position + BATCH]
        self.position += BATCH
        if self.position >= NUM_EXAMPLES:
            self.epoch, self.position = self.epoch + 1, 0
        return self.x[rows], self.y[rows]


def init_state(seed: int, optimizer: optax.GradientTransformation) -> dict[str, Any]:
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w1": jax.random.normal(k1, (DIM, HIDDEN)) * 0.5, "b1": jnp.zeros(HIDDEN),
              "w2": jax.random.normal(k2, (HIDDEN, 1)) * 0.5, "b2": jnp.zeros(1)}
    return {"params": params, "opt_state": optimizer.init(params)}


def make_train_step(optimizer: optax.GradientTransformation):
    def loss_fn(params, x, y):
        hidden = jnp.tanh(x @ params["w1"] + params["b1"])
        return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)

    @jax.jit
    def train_step(state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], x, y)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, loss

    return train_step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=1)
    parser.add_argument("--sync", action="store_true", help="synchronous saves")
    args = parser.parse_args(argv)

    optimizer = optax.adam(0.05)
    data = ShuffledBatches(args.seed)
    train_step = make_train_step(optimizer)
    abstract = jax.eval_shape(lambda: init_state(args.seed, optimizer))
    checkpointer = Checkpointer(args.workdir / "checkpoints", keep=2, save_every=args.save_every,
                                async_save=not args.sync)
    state, start, extra, source = resume_state(checkpointer, abstract, None, None,
                                               lambda: init_state(args.seed, optimizer))
    if extra is not None:
        data.set_state(extra)
    print(f"resumed {start} {source}", flush=True)

    for step in range(start + 1, args.steps + 1):
        x, y = data.next()
        state, loss = train_step(state, x, y)
        print(f"step {step} loss {float(loss).hex()}", flush=True)
        if checkpointer.save(step, state, extra=data.state()):
            print(f"saved {step}", flush=True)
    checkpointer.close()

    buffer = io.BytesIO()
    flat = {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(state["params"])[0]}
    np.savez(buffer, **flat)
    atomic_write_bytes(args.workdir / "final_params.npz", buffer.getvalue())
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
