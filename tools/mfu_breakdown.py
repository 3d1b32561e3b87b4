"""Where a BERT-base bf16 training step loses its FLOP/s: one GEMM, the forward, forward+backward.

    python tools/mfu_breakdown.py [--batch 256] [--length 256] [--out breakdown.json]

Why: tools/mfu_bert_base.py measured 12% MFU on an H200 for the whole dual-encoder step; this
times the pieces at the same shapes (documents only) so the next optimisation targets the right
one: a dense-layer GEMM alone (the ceiling), the encoder forward, and value_and_grad of the
encoder, each with float32 and with bfloat16 parameters. Run it on the accelerator.

Measured on an H200 (jax 0.11.2, batch 256 x length 256, bf16 compute; tools/results/
mfu_breakdown_h200.json): one 768x3072 GEMM 451 TFLOP/s; encoder forward 301 TFLOP/s (f32
params) / 323 (bf16 params); forward+backward 289 / 301 TFLOP/s, i.e. 29-30% of the 989 TFLOP/s
peak. The whole dual-encoder train step (mfu_bert_base.py) reached only 121 TFLOP/s (12%), so
more than half of the step's time is spent outside the encoder's forward and backward (the
dropout, loss, clipping and optimizer parts of the step): profile those first.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from irjax.models.bert import BertConfig, BertEncoder, flops_per_token

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072)


def median_seconds(fn: Callable[[], Any], steps: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    b, length = args.batch, args.length
    config = BertConfig(**BERT_BASE)
    rows: dict[str, Any] = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
                            "batch": b, "length": length}

    x = jax.random.normal(jax.random.key(0), (b * length, 768), jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (768, 3072), jnp.bfloat16)
    gemm = jax.jit(lambda x, w: x @ w)
    seconds = median_seconds(lambda: gemm(x, w), args.steps)
    rows["gemm_768x3072_tflops"] = 2 * b * length * 768 * 3072 / seconds / 1e12

    ids = jnp.asarray(np.random.default_rng(0).integers(1, config.vocab_size, (b, length)), jnp.int32)
    mask = jnp.ones_like(ids)
    forward_flops = b * length * flops_per_token(config, length)
    for param_dtype in (jnp.float32, jnp.bfloat16):
        module = BertEncoder(config, dtype=jnp.bfloat16, param_dtype=param_dtype)
        params = jax.jit(lambda: jax.tree.map(
            lambda v: v.value if hasattr(v, "value") else v,
            module.init(jax.random.key(2), ids[:1], mask[:1])["params"],
            is_leaf=lambda v: hasattr(v, "names")))()
        forward = jax.jit(lambda p: module.apply({"params": p}, ids, mask).astype(jnp.float32).mean())
        grad = jax.jit(jax.value_and_grad(forward))
        name = jnp.dtype(param_dtype).name
        seconds = median_seconds(lambda: forward(params), args.steps)
        rows[f"forward_{name}_params_ms"] = seconds * 1e3
        rows[f"forward_{name}_params_tflops"] = forward_flops / seconds / 1e12
        seconds = median_seconds(lambda: grad(params), args.steps)
        rows[f"fwd_bwd_{name}_params_ms"] = seconds * 1e3
        rows[f"fwd_bwd_{name}_params_tflops"] = 3 * forward_flops / seconds / 1e12
        print(json.dumps(rows), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
