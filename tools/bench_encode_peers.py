"""CPU encoding at each precision: irjax against the fastest backends that run the same MiniLM.

    .venv/bin/python tools/bench_encode_peers.py [--docs 512] [--max-length 256] [--threads N]
        [--batch-sizes 16,32,64] [--repeats 3] [--json OUT.json] [--smoke]

Peers (a worker under .venv-ref, set up by `make bench-peers-setup`): sentence-transformers on
eager PyTorch (float32); the same BERT exported to ONNX (torch.onnx) and run by ONNX Runtime with
its BERT fusions (attention, LayerNorm, GELU; exact GELU), and dynamically quantised to int8
(onnxruntime.quantization.quantize_dynamic, int8 weights, uint8 activations: what
sentence-transformers' `export_dynamic_quantized_onnx_model` produces); OpenVINO on that ONNX file
with inference precision f32 and bf16. irjax: TextEncoder in float32, bfloat16 compute and int8
dense matmuls (irjax/models/int8.py). Every side encodes the same SciFact texts end to end, from
strings to normalised vectors (tokenisation included; the peers sort texts by length and pad each
batch to its longest, as sentence-transformers does), at every batch size of --batch-sizes; the
rounds interleave all sides so that load from other processes hits them alike, and each side's
best batch size (median over rounds) is reported. Each side's vectors are compared with irjax's
float32 ones (cosine), so speed is compared at stated numerics: float32 against torch, ONNX and
OpenVINO f32; bfloat16 against OpenVINO bf16; int8 against ONNX int8. The float32 jnp.dot peak of
the same run gives irjax's fraction of the machine. CPU model and SIMD flags are printed: only
ratios from one run compare.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (REF_PYTHON, REF_SETUP_HINT, ROOT, TorchWorker, cpu_summary,  # noqa: E402
                          load_sentence_transformer, pin_threads, serve, timed)
from bench_encode import load_texts  # noqa: E402

PEERS = ("torch", "onnx", "onnx_int8", "openvino", "openvino_bf16")
IRJAX = ("float32", "bfloat16", "int8")
PRECISION = {"torch": "float32", "onnx": "float32", "openvino": "float32",
             "openvino_bf16": "bfloat16", "onnx_int8": "int8"}


# ----------------------------------------------------------------------------------------------
# peer worker (runs under .venv-ref)


def peer_worker(args: argparse.Namespace) -> None:
    import numpy as np

    torch, model = load_sentence_transformer(args.threads)
    texts = load_texts(args.docs)
    tokenizer = model.tokenizer
    bert = model[0].auto_model.eval()
    folder = Path(args.export_dir)
    runners = {"torch": None}

    class Hidden(torch.nn.Module):  # the last hidden state only, for a clean export
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: Any, mask: Any) -> Any:
            return self.inner(input_ids=ids, attention_mask=mask).last_hidden_state

    onnx_path = folder / "minilm.onnx"
    dummy = torch.ones((2, 16), dtype=torch.long)
    torch.onnx.export(Hidden(bert).eval(), (dummy, dummy), str(onnx_path),
                      input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                      dynamic_axes={n: {0: "batch", 1: "length"}
                                    for n in ("input_ids", "attention_mask", "hidden")},
                      opset_version=17, dynamo=False)
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    config = bert.config
    fused = optimize_model(str(onnx_path), model_type="bert", num_heads=config.num_attention_heads,
                           hidden_size=config.hidden_size)
    fused_path = folder / "minilm_fused.onnx"
    fused.save_model_to_file(str(fused_path))
    int8_path = folder / "minilm_int8.onnx"
    quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def ort_runner(path: Path) -> Any:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    runners["onnx"] = ort_runner(fused_path)
    runners["onnx_int8"] = ort_runner(int8_path)
    import openvino as ov

    core = ov.Core()
    for name, precision in (("openvino", "f32"), ("openvino_bf16", "bf16")):
        compiled = core.compile_model(str(onnx_path), "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": args.threads})
        runners[name] = (lambda c: lambda ids, mask: c({"input_ids": ids,
                                                         "attention_mask": mask})[0])(compiled)
    order = np.argsort([-len(t) for t in texts], kind="stable")  # as SentenceTransformer.encode

    def encode(backend: str, batch_size: int) -> np.ndarray:
        if backend == "torch":
            return model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        run, out = runners[backend], np.zeros((len(texts), config.hidden_size), np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                              max_length=args.max_length, return_tensors="np")
            mask = batch["attention_mask"].astype(np.int64)
            hidden = run(batch["input_ids"].astype(np.int64), mask)
            pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return out

    def encode_cmd(rest: list[str]) -> dict:
        start = time.perf_counter()
        encode(rest[0], int(rest[1]))
        return {"seconds": time.perf_counter() - start}

    def vectors_cmd(rest: list[str]) -> dict:
        np.save(rest[2], encode(rest[0], int(rest[1])))
        return {"path": rest[2]}

    model.max_seq_length = args.max_length
    serve(torch, {"encode": encode_cmd, "vectors": vectors_cmd}, args.matmul_n)


# ----------------------------------------------------------------------------------------------
# parent (irjax, under .venv)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch-sizes", default="16,32,64")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (medians)")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--irjax", default=",".join(IRJAX))
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="16 docs, length 32, batch 8, 1 round")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--export-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.docs, args.max_length, args.batch_sizes, args.repeats = 16, 32, "8", 1
        args.matmul_n = 256
    for name, allowed in (("peers", PEERS), ("irjax", IRJAX)):
        unknown = set(getattr(args, name).split(",")) - set(allowed)
        if unknown:
            parser.error(f"--{name}: unknown {sorted(unknown)}; choose from {list(allowed)}")
    return args


def main() -> None:
    args = parse_args()
    if args.torch_worker:
        return peer_worker(args)
    if not REF_PYTHON.exists():
        sys.exit(f"{REF_PYTHON} not found ({REF_SETUP_HINT}, then `make bench-peers-setup`)")
    pin_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    peers, numerics = args.peers.split(","), args.irjax.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        worker = TorchWorker(__file__, [  # started before jax so the two never compete
            "--export-dir", tmp, "--docs", str(args.docs),
            "--threads", str(args.threads), "--max-length", str(args.max_length),
            "--matmul-n", str(args.matmul_n)])
        result = run(args, worker, peers, numerics, batch_sizes, Path(tmp))
        worker.close()
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def run(args: argparse.Namespace, worker: TorchWorker, peers: list[str], numerics: list[str],
        batch_sizes: list[int], tmp: Path) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from irjax.models.dual_encoder import TextEncoder

    texts = load_texts(args.docs)
    encoders = {name: TextEncoder.from_pretrained(
        max_length=args.max_length, dtype=jnp.bfloat16 if name == "bfloat16" else jnp.float32,
        int8=name == "int8") for name in set(numerics) | {"float32"}}
    tokens = sum(len(s) for s in encoders["float32"].tokenizer.tokenize(texts, args.max_length))
    reference = encoders["float32"].encode(texts)
    sides = [("irjax", n) for n in numerics] + [("peer", p) for p in peers]
    cosine = {}
    for kind, name in sides:  # warm-up (compiles, exports) and the vectors to compare
        for b in batch_sizes:
            if kind == "irjax":
                vectors = encoders[name].encode(texts, batch_size=b)
            else:
                path = str(tmp / f"{name}_{b}.npy")
                vectors = np.load(worker.ask(f"vectors {name} {b} {path}")["path"])
        c = np.sum(vectors * reference, axis=-1)
        cosine[f"{kind}:{name}"] = {"min": float(c.min()), "mean": float(c.mean())}
    times: dict[str, dict[int, list[float]]] = {f"{k}:{n}": {b: [] for b in batch_sizes}
                                                for k, n in sides}
    for round_ in range(args.repeats):
        for b in batch_sizes:
            for kind, name in sides:
                if kind == "irjax":
                    start = time.perf_counter()
                    encoders[name].encode(texts, batch_size=b)
                    seconds = time.perf_counter() - start
                else:
                    seconds = worker.ask(f"encode {name} {b}")["seconds"]
                times[f"{kind}:{name}"][b].append(seconds)
        print(f"round {round_ + 1}/{args.repeats} done", flush=True)
    n = args.matmul_n
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    peak = 2 * n**3 / timed(lambda: dot(a, a).block_until_ready(), 10, best=True) / 1e9
    from irjax.models.bert import flops_per_token

    config = encoders["float32"].config
    lengths = [len(s) for s in encoders["float32"].tokenizer.tokenize(texts, args.max_length)]
    useful_flops = float(sum(length * flops_per_token(config, length) for length in lengths))
    sides_out = {}
    for key, per_batch in times.items():
        medians = {b: statistics.median(t) for b, t in per_batch.items()}
        best = min(medians, key=medians.get)
        kind, name = key.split(":")
        sides_out[key] = {
            "precision": name if kind == "irjax" else PRECISION[name],
            "best_batch_size": best, "seconds": medians[best], "tokens_per_s": tokens / medians[best],
            "gflops": useful_flops / medians[best] / 1e9,
            "tokens_per_s_by_batch": {str(b): tokens / m for b, m in medians.items()},
            "cosine_to_irjax_float32": cosine[key]}
    return {"cpu": cpu_summary(), "jax": jax.__version__, "torch": worker.info["torch"],
            "docs": len(texts), "tokens": tokens, "max_length": args.max_length,
            "threads": args.threads, "batch_sizes": batch_sizes, "repeats": args.repeats,
            "jnp_dot_float32_gflops": peak, "sides": sides_out}


def report(result: dict) -> None:
    print(f"\n{result['cpu']}\n{result['docs']} SciFact docs ({result['tokens']} tokens, max length "
          f"{result['max_length']}), {result['threads']} threads, best batch size of "
          f"{result['batch_sizes']} per side, medians of {result['repeats']} interleaved rounds")
    sides = result["sides"]
    for precision in IRJAX:
        group = {k: v for k, v in sides.items() if v["precision"] == precision}
        ours = group.get(f"irjax:{precision}")
        peers = {k: v for k, v in group.items() if k.startswith("peer:")}
        if not group:
            continue
        print(f"\n{precision}")
        for key, side in sorted(group.items(), key=lambda kv: -kv[1]["tokens_per_s"]):
            print(f"  {key:20s} {side['tokens_per_s']:8.0f} tokens/s (batch {side['best_batch_size']:3d})"
                  f"  cosine to irjax float32 min {side['cosine_to_irjax_float32']['min']:.5f}")
        if ours and peers:
            best_key = max(peers, key=lambda k: peers[k]["tokens_per_s"])
            ratio = ours["tokens_per_s"] / peers[best_key]["tokens_per_s"]
            result.setdefault("ratios", {})[precision] = {"best_peer": best_key, "ratio": ratio}
            print(f"  irjax / best peer ({best_key}): {ratio:.2f}x")
    f32 = sides.get("irjax:float32")
    if f32:
        fraction = f32["gflops"] / result["jnp_dot_float32_gflops"]
        result["irjax_float32_fraction_of_jnp_dot_peak"] = fraction
        print(f"\nirjax float32: {f32['gflops']:.0f} GFLOP/s on real tokens = {fraction:.0%} of the "
              f"float32 jnp.dot peak ({result['jnp_dot_float32_gflops']:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
