"""Query sampling speed of `generate_queries` with T5's decoder key/value cache versus without it
(the whole prefix recomputed each step), in one process.

    .venv/bin/python tools/bench_query_sampling.py [--docs 16] [--queries 10] [--repeats 3]

A randomly initialised T5 (default 'mini', as gin/train/qg_scifact.gin) samples --queries queries
of --max-length tokens for each of --docs synthetic documents. Weights and texts do not change
the cost: inputs are padded to --inputs-max-length and min_length = max_length keeps every sample
to full length, so every call runs the same fixed shapes. Rounds alternate between the two paths
so that load from other processes hits both alike; each round also checks that both sampled the
same queries. Compile time is the first call (one batch) minus a steady batch. The "sampler
alone" line is the top-k filter and categorical draw over the vocabulary with constant logits,
a cost both paths share. The defaults finish in under 3 minutes on the 2-core CPU; the real job
samples batches of 32 documents (--docs 64 --batch-size 32).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ROOT, pin_threads, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--queries", type=int, default=10, help="queries per document")
    parser.add_argument("--batch-size", type=int, default=16, help="documents per batch")
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--inputs-max-length", type=int, default=128)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per path")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    pin_threads(args.threads)

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ROOT))
    from irjax.data.tokenization import SentencePieceTokenizer
    from irjax.decoding.query_generation import generate_queries
    from irjax.decoding.sampling import sample_sequences_with_state
    from irjax.models.seq2seq import Seq2SeqModel
    from irjax.models.t5 import T5Config

    config = T5Config.preset(args.preset, dropout_rate=0.0)
    model = Seq2SeqModel(config)
    example = {"inputs": jnp.ones((1, args.inputs_max_length), jnp.int32),
               "inputs_mask": jnp.ones((1, args.inputs_max_length), jnp.int32),
               "targets": jnp.ones((1, args.max_length), jnp.int32)}
    params = nn.unbox(jax.jit(model.init_variables)(jax.random.key(0), example))
    tokenizer = SentencePieceTokenizer()
    docs = {f"d{i}": f"Document {i} reports how treatment {i % 7} changes protein {i % 11} levels "
                     f"in {i % 5 + 2} cell lines, with effects on growth and survival. " * 8
            for i in range(args.docs)}

    def sample(use_cache: bool, documents: dict[str, str] = docs) -> dict[str, list[str]]:
        return generate_queries(model, params, documents, tokenizer, args.queries,
                                top_k=args.top_k, max_length=args.max_length,
                                min_length=args.max_length,
                                inputs_max_length=args.inputs_max_length,
                                batch_size=args.batch_size, log_every=0, use_cache=use_cache)

    rows = args.batch_size * args.queries
    print(f"T5 {args.preset} (random init), {args.docs} docs x {args.queries} queries of "
          f"{args.max_length} tokens, batches of {args.batch_size} docs ({rows} rows), inputs "
          f"padded to {args.inputs_max_length}, top-k {args.top_k}; {args.threads} threads, "
          f"{jax.devices()[0].platform}, jax {jax.__version__}")

    first_batch = dict(list(docs.items())[:args.batch_size])
    warm_up = {}
    for use_cache in (True, False):
        start = time.perf_counter()
        sample(use_cache, first_batch)
        warm_up[use_cache] = time.perf_counter() - start

    times: dict[bool, list[float]] = {True: [], False: []}
    identical = True
    for _ in range(args.repeats):
        out = {}
        for use_cache in (True, False):
            start = time.perf_counter()
            out[use_cache] = sample(use_cache)
            times[use_cache].append(time.perf_counter() - start)
        identical &= out[True] == out[False]

    logits = jnp.zeros((rows, config.vocab_size), jnp.float32)

    def constant(ids: jax.Array, step: jax.Array, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        return state, state

    def sampler_alone() -> None:
        jax.block_until_ready(sample_sequences_with_state(
            constant, logits, jax.random.PRNGKey(0), args.batch_size, args.queries,
            args.max_length, top_k=args.top_k))

    sampler_alone()  # compile
    batches = -(-args.docs // args.batch_size)
    sampler = timed(sampler_alone, args.repeats) * batches

    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedians of {args.repeats} interleaved rounds (each: all {args.docs} docs)")
    for use_cache, name in ((True, "cached"), (False, "recomputed")):
        per_batch = medians[use_cache] / batches
        print(f"  {name:10s} {medians[use_cache]:7.2f} s  {args.docs / medians[use_cache]:6.2f} "
              f"docs/s  rounds [{', '.join(f'{t:.2f}' for t in times[use_cache])}]  compile "
              f"~{warm_up[use_cache] - per_batch:.1f} s")
    print(f"  cache speed-up: {medians[False] / medians[True]:.2f}x (ratio of medians); "
          f"identical queries in every round: {identical}")
    print(f"  sampler alone (top-k + categorical over {config.vocab_size} ids, constant logits): "
          f"{sampler:.2f} s of each round, shared by both paths")


if __name__ == "__main__":
    main()
