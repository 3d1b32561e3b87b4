"""Where a dual-encoder training step's time goes: the step cut into timed, jitted sub-steps.

    python tools/profile_step.py --out profile.json [--preset minilm|bert-base] [--batch-size 32]
        [--query-length 32] [--doc-length 128] [--dtype float32] [--options baseline,flash,...]
        [--trace DIR]
    python tools/profile_step.py --smoke --out /tmp/profile.json

Each piece is compiled on its own from the code real training runs (DualEncoderModel.loss,
Trainer.make_train_step, the optimizer of OptimizerConfig) and timed as the median of blocking
calls; XLA's cost analysis (FLOPs, bytes accessed) of each compiled piece is printed beside it.
The groups are read off as differences:

  host transfer        putting the host batch on the devices (partitioning.global_batch)
  encoder forward      embedding queries and documents (dropout on)
  loss                 the full forward minus the encoder forward (scores, softmax cross-entropy)
  encoder backward     forward+backward minus the forward
  attention            self-attention alone (every layer, forward+backward, queries and documents;
                       part of the encoder's time, shown to size it)
  dropout RNG + masks  forward+backward with dropout minus without
  clipping             the global-norm clip of the gradients
  optimizer            the AdamW update (with clipping) minus clipping
  other                the whole step minus (forward+backward + optimizer + clipping): what the
                       fused step saves or spends beyond its parts
Collectives do not occur on one device; on a mesh they sit inside forward+backward. With --trace
DIR, a jax.profiler trace of 3 whole steps is written for TensorBoard's profile plugin or Perfetto
(per-op times on GPU and TPU). --options applies efficiency switches as in mfu_bert_base.py.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_summary  # noqa: E402
from mfu_common import STEPS, cumulative_options, xla_cost, xla_flops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = {
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536, max_position_embeddings=512),
    "bert-base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512),
    "smoke": dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=64),
}


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of blocking calls to `fn` (one untimed call first)."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_batch(rng: Any, vocab: int, b: int, lq: int, ld: int) -> dict:
    import numpy as np

    return {"query_ids": rng.integers(1, vocab, (b, lq), dtype=np.int32),
            "query_mask": np.ones((b, lq), np.int32),
            "pos_ids": rng.integers(1, vocab, (b, ld), dtype=np.int32),
            "pos_mask": np.ones((b, ld), np.int32),
            "labels": np.arange(b, dtype=np.int32), "logit_mask": np.ones((b, b), bool)}


def profile(args: argparse.Namespace) -> dict:
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from irjax.models.bert import BertConfig, BertSelfAttention
    from irjax.models.dual_encoder_training import DualEncoderModel
    from irjax.models.efficiency import EncoderEfficiency
    from irjax.parallel import partitioning as pt
    from irjax.training.optimizer import OptimizerConfig
    from irjax.training.trainer import Trainer
    from irjax.training.trainer_config import TrainerConfig

    device = jax.devices()[0]
    label, efficiency, optimizer_options, trainer_options = cumulative_options(
        args.options.split(","), device.platform)[-1]
    config = BertConfig(**PRESETS[args.preset])
    b, lq, ld = args.batch_size, args.query_length, args.doc_length
    dtype = jnp.dtype(args.dtype)
    model = DualEncoderModel(config, dtype=dtype, efficiency=EncoderEfficiency(**efficiency))
    quiet = dataclasses.replace(model, dropout=False)
    optimizer = OptimizerConfig(learning_rate=1e-4, decay="constant", weight_decay=0.01,
                                clip_norm=1.0, **optimizer_options)
    host = random_batch(np.random.default_rng(0), config.vocab_size, b, lq, ld)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, tmp, TrainerConfig(num_steps=10 ** 6, progress_bar=False,
                                                    **trainer_options),
                          optimizer, mesh=pt.create_mesh(1, 1, [device]), console=None)
        state, shardings, _ = trainer.initial_state(host)
    mesh, tx = trainer.mesh, trainer.tx
    batch = pt.global_batch(host, mesh)
    rng = jax.random.key(0)
    params = state.params
    pieces: dict[str, dict[str, Any]] = {}

    def piece(name: str, fn: Callable, *operands: Any) -> Any:
        with pt.with_sharding_rules(mesh, trainer.rules):
            compiled = jax.jit(fn).lower(*operands).compile()
            seconds = median_seconds(lambda: compiled(*operands), args.repeats)
        pieces[name] = {"ms": seconds * 1e3, "xla_gflop": (xla_flops(compiled) or 0) / 1e9,
                        "xla_gbytes": (xla_cost(compiled, "bytes accessed") or 0) / 1e9}
        print(f"  {name:28s} {seconds * 1e3:9.2f} ms", flush=True)
        return compiled(*operands)

    def encode(p, batch, rng):
        q_rng, d_rng = jax.random.split(rng)
        return (model.embed(p, "query", batch["query_ids"], batch["query_mask"], q_rng),
                model.embed(p, "doc", batch["pos_ids"], batch["pos_mask"], d_rng))

    pieces["host transfer"] = {"ms": median_seconds(lambda: pt.global_batch(host, mesh),
                                                    args.repeats) * 1e3}
    print(f"  {'host transfer':28s} {pieces['host transfer']['ms']:9.2f} ms", flush=True)
    piece("encoder forward", encode, params, batch, rng)
    piece("forward", lambda p, x, r: model.loss(p, x, r)[0], params, batch, rng)
    grads = piece("forward+backward",
                  lambda p, x, r: jax.grad(lambda q: model.loss(q, x, r)[0])(p), params, batch, rng)
    piece("forward+backward, no dropout",
          lambda p, x, r: jax.grad(lambda q: quiet.loss(q, x, r)[0])(p), params, batch, rng)
    attention = BertSelfAttention(config, dtype, attention=model.efficiency.attention)

    def attention_fwd_bwd(key):
        total = 0.0
        for length in (lq, ld):
            x = jax.random.normal(key, (b, length, config.hidden_size), dtype)
            mask = jnp.ones((b, length), jnp.int32)
            variables = attention.init(key, x, mask, True)
            loss = lambda v, x: jnp.sum(attention.apply(  # noqa: E731
                v, x, mask, False, rngs={"dropout": key}).astype(jnp.float32))
            grads = jax.grad(loss, argnums=(0, 1))(variables, x)
            total = total + sum(jnp.sum(g) for g in jax.tree.leaves(grads))
        return total

    piece("attention (1 layer)", attention_fwd_bwd, rng)
    pieces["attention"] = {"ms": pieces.pop("attention (1 layer)")["ms"] * config.num_hidden_layers}
    clip = optax.clip_by_global_norm(1.0)
    piece("clipping", lambda g: clip.update(g, clip.init(g))[0], grads)
    piece("optimizer (with clipping)",
          lambda g, s: optax.apply_updates(s.params, tx.update(g, s.opt_state, s.params)[0]),
          grads, state)
    step = trainer.make_train_step(shardings)
    with pt.with_sharding_rules(mesh, trainer.rules):
        compiled = step.lower(state, batch).compile()
        holder = [state]

        def one_step():
            holder[0], metrics = compiled(holder[0], batch)
            return holder[0], metrics

        whole = median_seconds(one_step, args.repeats)
        if args.trace:
            jax.profiler.start_trace(args.trace)
            for _ in range(3):
                jax.block_until_ready(one_step())
            jax.profiler.stop_trace()
    pieces["whole step"] = {"ms": whole * 1e3, "xla_gflop": (xla_flops(compiled) or 0) / 1e9,
                            "xla_gbytes": (xla_cost(compiled, "bytes accessed") or 0) / 1e9}

    ms = {name: p["ms"] for name, p in pieces.items()}
    groups = {
        "host transfer": ms["host transfer"],
        "encoder forward": ms["encoder forward"],
        "loss": ms["forward"] - ms["encoder forward"],
        "encoder backward": ms["forward+backward"] - ms["forward"],
        "attention (inside the encoder)": ms["attention"],
        "dropout RNG + masks": ms["forward+backward"] - ms["forward+backward, no dropout"],
        "clipping": ms["clipping"],
        "optimizer": ms["optimizer (with clipping)"] - ms["clipping"],
        "other": ms["whole step"] - ms["forward+backward"] - ms["optimizer (with clipping)"],
    }
    return {"device_kind": device.device_kind, "platform": device.platform, "cpu": cpu_summary(),
            "jax": jax.__version__, "preset": args.preset, "dtype": args.dtype,
            "batch_size": b, "query_length": lq, "doc_length": ld, "options": label,
            "efficiency": efficiency, "optimizer": optimizer_options, "trainer": trainer_options,
            "repeats": args.repeats, "pieces": pieces, "groups_ms": groups,
            "step_ms": ms["whole step"], "trace": args.trace}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--preset", default="minilm", choices=sorted(PRESETS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--doc-length", type=int, default=128)
    parser.add_argument("--dtype", default="float32", help="compute dtype (params stay float32)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per piece (median)")
    parser.add_argument("--options", default="baseline", help=f"as mfu_bert_base.py: {list(STEPS)}")
    parser.add_argument("--trace", help="write a jax.profiler trace of 3 steps to this directory")
    parser.add_argument("--smoke", action="store_true", help="tiny config, batch 4, lengths 8/16")
    args = parser.parse_args()
    unknown = [o for o in args.options.split(",") if o not in STEPS]
    if unknown:
        parser.error(f"unknown --options {unknown}; choose from {list(STEPS)}")
    if args.smoke:
        args.preset, args.batch_size, args.query_length, args.doc_length = "smoke", 4, 8, 16
        args.repeats = 2
    return args


def main() -> None:
    args = parse_args()
    print(cpu_summary(), flush=True)
    result = profile(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    step = result["step_ms"]
    print(f"\n{result['preset']} dual encoder, {result['batch_size']} pairs x "
          f"({result['query_length']} + {result['doc_length']}) tokens, {result['dtype']}, "
          f"{result['options']} on {result['device_kind']}: whole step {step:.1f} ms "
          f"(medians of {result['repeats']})")
    for name, value in result["groups_ms"].items():
        print(f"  {name:32s} {value:9.2f} ms  {value / step:7.1%}")
    print(f"  wrote {args.out}")


if __name__ == "__main__":
    main()
