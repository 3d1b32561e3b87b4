"""A tiny sharded training run, executed in a subprocess so its device count can be chosen.

Runs a transformer-like block (logical names on every param, logical constraints on
activations) with AdamW for a few jitted steps with explicit in/out shardings and a donated
state, feeding each process only its `process_shard` of a fixed global batch through
`global_batch`. Every process prints `SHARD [index, [start, stop]]` (the rows it read); only
process 0 prints `RESULT {json}` with losses, gathered params and layout facts.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python sharded_step_script.py \
        --data 4 --model 2 --reference
"""
from __future__ import annotations

import argparse
import json
import sys

from irjax.parallel.distributed import initialize_distributed

VOCAB, EMBED, MLP, HEADS, KV = 32, 16, 32, 2, 8
GLOBAL_BATCH, LENGTH = 16, 8


def run(data: int, model: int, steps: int, devices=None) -> dict:
    """Trains `steps` steps on a (data, model) mesh; returns losses, params and layout facts."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import traverse_util
    from jax.experimental import multihost_utils

    from irjax.parallel import partitioning as pt
    from irjax.parallel import processes

    class Dense(nn.Module):
        """Contracts the last `contract` axes; kernel and bias carry logical names. (flax's
        DenseGeneral reshapes boxed N-d kernels through unbox(), which breaks under a mesh.)"""

        features: tuple[int, ...]
        names: tuple[str, ...]
        contract: int = 1
        use_bias: bool = True

        @nn.compact
        def __call__(self, x):
            shape = x.shape[x.ndim - self.contract:] + self.features
            kernel = self.param("kernel", nn.with_logical_partitioning(
                nn.initializers.normal(0.3), self.names), shape)
            axes = tuple(range(x.ndim - self.contract, x.ndim))
            y = jnp.tensordot(x, kernel, (axes, tuple(range(self.contract))))
            if not self.use_bias:
                return y
            return y + self.param("bias", nn.with_logical_partitioning(
                nn.initializers.zeros_init(), self.names[self.contract:]), self.features)

    def dense(features, contract, names, name):
        # A key bias shifts every score of a query equally, so its true gradient is 0 and
        # Adam would blow rounding noise up to lr-sized steps: no key bias.
        return Dense(tuple(features), names, contract, use_bias=name != "k", name=name)

    class TinyBlock(nn.Module):
        """Embedding, one attention layer, one MLP, tied output projection."""

        @nn.compact
        def __call__(self, tokens):
            embedding = self.param("embedding", nn.with_logical_partitioning(
                nn.initializers.normal(0.5), ("vocab", "embed")), (VOCAB, EMBED))
            x = nn.with_logical_constraint(embedding[tokens], ("batch", "length", "embed"))
            q, k, v = (dense((HEADS, KV), 1, ("embed", "heads", "kv"), n)(x) for n in "qkv")
            q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
            attn = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(KV), axis=-1)
            y = jnp.einsum("bhqk,bkhd->bqhd", attn, v)
            x = x + dense((EMBED,), 2, ("heads", "kv", "embed"), "out")(y)
            h = nn.gelu(dense((MLP,), 1, ("embed", "mlp"), "wi")(x))
            h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
            x = x + dense((EMBED,), 1, ("mlp", "embed"), "wo")(h)
            x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
            return jnp.einsum("ble,ve->blv", x, embedding)

    module = TinyBlock()
    tx = optax.adamw(1e-2, weight_decay=0.1)

    def init_fn(rng):
        params = module.init(rng, jnp.zeros((1, LENGTH), jnp.int32))["params"]
        return {"params": params, "opt_state": tx.init(params)}

    def train_step(state, batch):
        def loss_fn(params):
            logits = module.apply({"params": params}, batch["tokens"])
            return optax.softmax_cross_entropy_with_integer_labels(
                logits[:, :-1], batch["tokens"][:, 1:]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates),
                "opt_state": opt_state}, loss

    mesh = pt.create_mesh(data, model, devices)
    rules = pt.DEFAULT_RULES
    state, state_shardings = pt.init_sharded(init_fn, mesh, rules, jax.random.key(0))
    batch_shardings = {"tokens": pt.batch_sharding(mesh)}
    step = jax.jit(train_step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, pt.replicated(mesh)), donate_argnums=0)

    tokens = np.random.default_rng(0).integers(0, VOCAB, (steps, GLOBAL_BATCH, LENGTH),
                                               dtype=np.int32)
    mine = processes.process_shard(GLOBAL_BATCH)
    losses, donated, hlo = [], [], ""
    with pt.with_sharding_rules(mesh, rules):
        for i in range(steps):
            batch = pt.global_batch({"tokens": tokens[i, mine]}, mesh)
            if i == 0:
                hlo = step.lower(state, batch).as_text()
            old_leaf = state["params"]["embedding"]
            state, loss = step(state, batch)
            donated.append(bool(old_leaf.is_deleted()))
            losses.append(float(np.asarray(loss.addressable_data(0))))

    wi = state["params"]["wi"]["kernel"]
    gathered = multihost_utils.process_allgather(state["params"], tiled=True)
    flat = traverse_util.flatten_dict(gathered, sep="/")
    return {
        "devices": mesh.devices.size,
        "processes": jax.process_count(),
        "losses": losses,
        "params": {k: np.asarray(v, np.float64).ravel().tolist() for k, v in flat.items()},
        "checksum": float(sum(np.abs(np.asarray(v, np.float64)).sum() for v in flat.values())),
        "mlp_kernel_spec": [None if a is None else str(a) for a in wi.sharding.spec],
        "mlp_kernel_shard_shape": list(wi.addressable_shards[0].data.shape),
        "batch_spec": [str(a) for a in batch["tokens"].sharding.spec],
        "state_donated": all(donated),
        "constraints_in_hlo": hlo.count("sharding_constraint"),
        "local_rows": [mine.start, mine.stop],
    }


def error_checks(data: int, model: int) -> dict:
    """Messages of the errors that need several local devices to trigger."""
    import numpy as np

    from irjax.parallel import partitioning as pt

    mesh = pt.create_mesh(data, model)
    messages = {}
    try:
        pt.global_batch({"tokens": np.zeros((data + 2, 3), np.int32)}, mesh)
    except ValueError as error:
        messages["global_batch"] = str(error)
    import flax.linen as nn
    import jax

    box = nn.LogicallyPartitioned(jax.ShapeDtypeStruct((33, 4), np.float32), ("vocab", "embed"))
    try:
        pt.logical_shardings({"embedding": box}, mesh)
    except ValueError as error:
        messages["indivisible"] = str(error)
    return messages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=int, default=-1)
    parser.add_argument("--model", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--reference", action="store_true",
                        help="also run the same steps on a 1-device mesh in this process")
    parser.add_argument("--error_checks", action="store_true")
    args = parser.parse_args(argv)
    initialize_distributed()  # reads IRJAX_* set by the launcher; no-op for one process

    import jax

    from irjax.parallel.processes import is_logging_process

    result = {"sharded": run(args.data, args.model, args.steps),
              "collectives": jax.config.jax_cpu_collectives_implementation}
    rows = result["sharded"]["local_rows"]
    print(f"SHARD {json.dumps([jax.process_index(), rows])}", flush=True)  # every process
    if args.reference:
        result["reference"] = run(1, 1, args.steps, devices=jax.devices()[:1])
    if args.error_checks:
        result["errors"] = error_checks(args.data, args.model)
    if is_logging_process():
        print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
