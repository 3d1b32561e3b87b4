"""Encoding throughput of irjax's TextEncoder versus sentence-transformers on PyTorch CPU.

    .venv/bin/python tools/bench_encode.py [--docs 512] [--threads 2] [--batch-size 64]
        [--max-length 256] [--repeats 3] [--jax-only] [--json OUT.json]

The irjax side runs in this process (the project's .venv); the PyTorch side runs in a worker
subprocess under .venv-ref (see tools/make_reference_vectors.py --setup), so neither environment
needs the other's framework. The two never run at the same time: the parent sends the worker one
command at a time over a pipe and waits, and rounds alternate between the frameworks so that load
from other processes on the machine hits both alike. Both processes are pinned to the same
`--threads` CPUs (sched_setaffinity, which XLA's CPU thread pool sizes itself by) and PyTorch gets
torch.set_num_threads(threads) with OMP/MKL_NUM_THREADS set to match.

Same texts (the first --docs SciFact documents, title + " " + text, from $IRJAX_DATA_DIR or
../shared/data), same max length (256), same batch size, float32 on both sides, end to end from
strings to normalised vectors (tokenization included), compiles excluded by a warm-up pass.
Throughput counts real (non-padding) tokens. Model FLOPs are ~2 x matmul params per token plus
attention (QK^T and PV over each text's own length); they are reported as a fraction of this
machine's float32 matmul peak, measured in the same run with a large jitted jnp.dot.

--jax-only times irjax alone (no .venv-ref needed, as in CI; tests/tools/test_bench_smoke.py runs
it on a few documents): the same numbers without the sentence-transformers column and ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (REF_PYTHON, REF_SETUP_HINT, ROOT, TorchWorker, cpu_summary,  # noqa: E402
                          load_sentence_transformer, pin_threads, serve, timed)


def load_texts(n: int) -> list[str]:
    data = Path(os.environ.get("IRJAX_DATA_DIR", ROOT.parent / "shared" / "data"))
    corpus = data / "scifact" / "corpus.jsonl"
    if not corpus.exists():
        sys.exit(f"{corpus} not found; set IRJAX_DATA_DIR to the folder holding scifact/")
    texts = []
    with open(corpus) as f:
        for line in f:
            doc = json.loads(line)
            texts.append((doc.get("title", "") + " " + doc["text"]).strip())
            if len(texts) == n:
                break
    return texts


# ----------------------------------------------------------------------------------------------
# PyTorch worker (runs under .venv-ref)


def torch_worker(args: argparse.Namespace) -> None:
    import numpy as np

    torch, model = load_sentence_transformer(args.threads)
    model.max_seq_length = args.max_length
    texts = load_texts(args.docs)

    def encode(_: list[str]) -> dict:
        start = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, show_progress_bar=False,
                     convert_to_numpy=True)
        return {"seconds": time.perf_counter() - start}

    def breakdown(_: list[str]) -> dict:
        order = np.argsort([-len(t) for t in texts], kind="stable")  # as model.encode sorts
        batches = [[texts[i] for i in order[s:s + args.batch_size]]
                   for s in range(0, len(texts), args.batch_size)]
        prep = getattr(model, "preprocess", None) or model.tokenize
        tok = timed(lambda: [prep(b) for b in batches], 3)
        features = [prep(b) for b in batches]
        padded = sum(int(f["input_ids"].numel()) for f in features)

        def forward():
            with torch.inference_mode():
                for f in features:
                    model(f)

        return {"tokenize": tok, "forward": timed(forward, 1), "padded_tokens": padded}

    serve(torch, {"encode": encode, "breakdown": breakdown}, args.matmul_n)


# ----------------------------------------------------------------------------------------------
# irjax side (runs under .venv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per framework")
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--jax-only", action="store_true", help="skip the sentence-transformers side")
    parser.add_argument("--numerics", default="float32",
                        help="irjax numerics to time besides float32, comma-separated: bfloat16 "
                             "(compute dtype), int8 (dynamic int8 dense matmuls); each reports its "
                             "cosine to irjax's float32 vectors")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        return torch_worker(args)
    if args.repeats < 1:
        sys.exit("--repeats must be >= 1")
    if not args.jax_only and not REF_PYTHON.exists():
        sys.exit(f"{REF_PYTHON} not found ({REF_SETUP_HINT}), "
                 "or pass --jax-only to time irjax alone")

    pin_threads(args.threads)
    worker = None
    if not args.jax_only:  # started before jax so the two never compete during timing
        worker = TorchWorker(__file__, [
            "--docs", str(args.docs), "--threads", str(args.threads),
            "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
            "--matmul-n", str(args.matmul_n)])
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from irjax.data.batching import length_buckets, padded_rows, padding_stats
    from irjax.data.tokenization import pad_sequences
    from irjax.models.bert import flops_per_token
    from irjax.models.dual_encoder import TextEncoder

    texts = load_texts(args.docs)
    encoder = TextEncoder.from_pretrained(max_length=args.max_length, batch_size=args.batch_size)
    variants = {name: TextEncoder.from_pretrained(
        max_length=args.max_length, batch_size=args.batch_size,
        dtype=jnp.bfloat16 if name == "bfloat16" else jnp.float32, int8=name == "int8")
        for name in args.numerics.split(",") if name != "float32"}
    unknown = set(variants) - {"bfloat16", "int8"}
    if unknown:
        sys.exit(f"--numerics: unknown {sorted(unknown)}; choose from float32, bfloat16, int8")
    config = encoder.config
    seqs = encoder.tokenizer.tokenize(texts, args.max_length)
    lengths = np.array([len(s) for s in seqs])
    tokens = int(lengths.sum())
    useful_flops = float(sum(n * flops_per_token(config, n) for n in lengths))
    buckets = length_buckets(lengths, args.batch_size, encoder.bucket_multiple, args.max_length)
    stats = padding_stats(lengths, buckets)
    executed_flops = float(sum(padded_rows(len(b), args.batch_size) * b.length
                               * flops_per_token(config, b.length) for b in buckets))
    print(f"{len(texts)} SciFact docs, {tokens} real tokens (mean {lengths.mean():.0f}, "
          f"{int((lengths == args.max_length).sum())} truncated at {args.max_length}), "
          f"batch {args.batch_size}, {args.threads} threads; {jax.devices()[0].platform}, "
          f"jax {jax.__version__}"
          + (f", torch {worker.info['torch']} ({worker.info['threads']} threads)" if worker else
             " (--jax-only: no sentence-transformers)"))
    print(f"irjax buckets: {len(buckets)} batches, {stats['shapes']} shapes, padding efficiency "
          f"{stats['efficiency']:.3f}, micro-batch {encoder.micro_batch_tokens} tokens")

    start = time.perf_counter()
    reference = encoder.encode(texts)  # compiles every bucket shape
    warmup_s = time.perf_counter() - start
    print(f"irjax warm-up (compiles included): {warmup_s:.1f} s")
    print(cpu_summary())
    cosines = {}
    for name, variant in variants.items():
        vectors = variant.encode(texts)  # compiles, and the vectors to compare
        cosine = np.sum(vectors * reference, axis=-1)
        cosines[name] = {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean())}
    if worker:
        worker.ask("encode")  # warm-up

    # The matmul peak is sampled every round too and the best sample kept: other processes on
    # a shared machine can only make a sample slower, never faster.
    n = args.matmul_n
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    peak_samples = []
    st_times, jx_times = [], []
    variant_times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        if worker:
            st_times.append(worker.ask("encode")["seconds"])
        start = time.perf_counter()
        encoder.encode(texts)
        jx_times.append(time.perf_counter() - start)
        for name, variant in variants.items():
            start = time.perf_counter()
            variant.encode(texts)
            variant_times[name].append(time.perf_counter() - start)
        peak_samples.append(timed(lambda: dot(a, a).block_until_ready(), 5, best=True))
    jx = statistics.median(jx_times)
    st = statistics.median(st_times) if worker else None
    peak_samples.append(timed(lambda: dot(a, a).block_until_ready(), 10, best=True))
    peak_jax = 2 * n**3 / min(peak_samples) / 1e9
    an = np.asarray(a)
    peak_np = 2 * n**3 / timed(lambda: an @ an, 10, best=True) / 1e9
    peak_torch = 2 * n**3 / worker.ask("matmul")["seconds"] / 1e9 if worker else None

    # Where the time goes: host tokenization vs device forward, and the effect of slicing.
    tok_time = timed(lambda: encoder.tokenizer.tokenize(texts, args.max_length), 3)
    batches = [pad_sequences([seqs[i] for i in b.indices], 0, b.length,
                             padded_rows(len(b), args.batch_size)) for b in buckets]

    def forward(fn):
        for batch in batches:
            fn(encoder.params, batch.ids, batch.mask).block_until_ready()

    fwd_time = timed(lambda: forward(encoder.forward), 1)
    unsliced = TextEncoder(encoder.module, encoder.params, encoder.tokenizer, name=encoder.name,
                           max_length=args.max_length, batch_size=args.batch_size,
                           micro_batch_tokens=None)
    forward(unsliced.forward)  # compile
    unsliced_time = timed(lambda: forward(unsliced.forward), 1)
    st_parts = None
    if worker:
        st_parts = worker.ask("breakdown")
        worker.close()
    check = np.abs(encoder.encode(texts[:8]) - reference[:8]).max()

    rounds = "interleaved rounds" if worker else "rounds"
    print(f"\nmedians of {args.repeats} {rounds} (each: {len(texts)} docs end to end)")
    if worker:
        print(f"  sentence-transformers {st:7.2f} s  {tokens / st:8.0f} tokens/s   rounds {_fmt(st_times)}")
    print(f"  irjax                 {jx:7.2f} s  {tokens / jx:8.0f} tokens/s   rounds {_fmt(jx_times)}")
    numerics = {}
    for name, times in variant_times.items():
        t = statistics.median(times)
        numerics[name] = {"seconds_median": t, "tokens_per_s": tokens / t, "rounds_s": times,
                          "speedup_over_float32": jx / t, **cosines[name]}
        print(f"  irjax {name:15s} {t:7.2f} s  {tokens / t:8.0f} tokens/s   rounds {_fmt(times)}"
              f"   {jx / t:.2f}x float32; cosine to float32 min {cosines[name]['cosine_min']:.5f} "
              f"mean {cosines[name]['cosine_mean']:.5f}")
    if worker:
        ratios = [s / j for s, j in zip(st_times, jx_times)]
        print(f"  ratio irjax / sentence-transformers: {st / jx:.2f}x (ratio of medians); "
              f"per round {_fmt(ratios)}, median {statistics.median(ratios):.2f}x")
    print(f"\nfloat32 matmul peak ({n}x{n}, best sample of the run): jnp.dot {peak_jax:.0f} GFLOP/s, numpy {peak_np:.0f}"
          + (f", torch {peak_torch:.0f}" if worker else ""))
    print(f"model FLOPs on real tokens: {useful_flops / 1e12:.2f} TFLOP "
          f"(irjax executes {executed_flops / 1e12:.2f} with bucket padding)")
    for name, t in (("irjax", jx), ("sentence-transformers", st)):
        if t is not None:
            print(f"  {name:22s} {useful_flops / t / 1e9:6.0f} GFLOP/s = "
                  f"{useful_flops / t / 1e9 / peak_jax:.0%} of the jnp.dot peak")
    print("\nwhere the time goes")
    print(f"  irjax: tokenize {tok_time:.2f} s, forward {fwd_time:.2f} s "
          f"({executed_flops / fwd_time / 1e9:.0f} GFLOP/s executed); same forward without "
          f"micro-batch slicing {unsliced_time:.2f} s ({unsliced_time / fwd_time:.1f}x slower)")
    if worker:
        print(f"  sentence-transformers: tokenize {st_parts['tokenize']:.2f} s, forward "
              f"{st_parts['forward']:.2f} s, padded tokens {st_parts['padded_tokens']} vs irjax "
              f"{stats['padded_tokens']} (real {tokens})")
    print(f"  irjax re-encode max |diff| {check:.1e}")

    if args.json:
        result = {
            "settings": {k: v for k, v in vars(args).items() if k not in ("torch_worker", "json")},
            "docs": len(texts), "tokens": tokens, "platform": jax.devices()[0].platform,
            "jax": jax.__version__, "cpu": cpu_summary(), "irjax_numerics": numerics,
            "padding": {"batches": len(buckets), "shapes": stats["shapes"],
                        "efficiency": stats["efficiency"], "padded_tokens": stats["padded_tokens"]},
            "flops": {"useful": useful_flops, "executed": executed_flops},
            "peak_gflops": {"jnp_dot_float32": peak_jax, "numpy_float32": peak_np,
                            "torch_mm_float32": peak_torch},
            "irjax": {"seconds_median": jx, "tokens_per_s": tokens / jx, "rounds_s": jx_times,
                      "warmup_s": warmup_s, "gflops": useful_flops / jx / 1e9,
                      "fraction_of_peak": useful_flops / jx / 1e9 / peak_jax,
                      "tokenize_s": tok_time, "forward_s": fwd_time,
                      "forward_unsliced_s": unsliced_time, "reencode_max_abs_diff": float(check)},
        }
        if worker:
            result["sentence_transformers"] = {
                "seconds_median": st, "tokens_per_s": tokens / st, "rounds_s": st_times,
                "gflops": useful_flops / st / 1e9, **st_parts}
            result["ratio_irjax_over_sentence_transformers"] = st / jx
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


if __name__ == "__main__":
    main()
