"""What the MFU tools share (mfu_bert_base.py, mfu_t5.py): device peaks, the efficiency switches
measured one on top of another, the timed real train step, and the table they print.

A tool supplies `build(efficiency, args) -> (TrainableModel, host batch, analytic FLOPs, config)`;
`measure_options` compiles `Trainer.make_train_step` for each cumulative set of switches, times it
(median of blocking steps, then back to back as Trainer.train dispatches), and `report` writes the
JSON and prints MFU per row with each switch's speed-up over the row before.
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
from bench_train import matmul_peak_gflops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 peak TFLOP/s, matched in order against jax's device_kind (first match wins).
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
    ("A100", 312.0), ("TPU v4", 275.0), ("TPU v5 lite", 197.0), ("TPU v5e", 197.0),
    ("TPU v5p", 459.0), ("TPU v5", 459.0),
)
_T0 = time.perf_counter()


# The efficiency switches, each a step added on top of the ones before it in --options:
# (EncoderEfficiency, OptimizerConfig, TrainerConfig) overrides.
STEPS: dict[str, tuple[dict, dict, dict]] = {
    "baseline": ({}, {}, {}),
    "unsafe_rbg": ({}, {}, {"prng_impl": "unsafe_rbg"}),
    "flash": ({"attention": "flash"}, {}, {}),          # 'cudnn' on GPU, 'fused' elsewhere
    "flatten": ({}, {"flatten": True}, {}),
    "mu_bf16": ({}, {"mu_dtype": "bfloat16"}, {}),
    "remat_dots": ({"remat": "dots"}, {}, {}),
    "remat_full": ({"remat": "full"}, {}, {}),
}


def cumulative_options(names: list[str], platform: str) -> list[tuple[str, dict, dict, dict]]:
    """(label, efficiency, optimizer, trainer) settings after each step of `names`."""
    efficiency, optimizer, trainer, out = {}, {}, {}, []
    for name in names:
        e, o, t = STEPS[name]
        efficiency, optimizer, trainer = {**efficiency, **e}, {**optimizer, **o}, {**trainer, **t}
        if efficiency.get("attention") == "flash":
            efficiency["attention"] = "cudnn" if platform == "gpu" else "fused"
        out.append(("+".join(names[:len(out) + 1]), dict(efficiency), dict(optimizer), dict(trainer)))
    return out


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s] {message}", flush=True)


def peak_for(kind: str) -> float | None:
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in kind.lower():
            return tflops
    return None


def xla_cost(compiled: Any, key: str) -> float | None:
    """One entry of XLA's cost analysis of a compiled function ('flops', 'bytes accessed'), or
    None where the backend has none or reports nothing positive."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # backends without cost analysis raise assorted errors
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    value = (analysis or {}).get(key)
    return float(value) if value and value > 0 else None


def xla_flops(compiled: Any) -> float | None:
    """FLOPs of the compiled step by XLA's cost analysis, or None where the backend has none."""
    return xla_cost(compiled, "flops")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (fewer if --max-seconds hits)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="cap on the timed loops of each option")
    parser.add_argument("--dtype", default="bfloat16", help="compute dtype (params stay float32)")
    parser.add_argument("--no-dropout", action="store_true", help="to measure what dropout costs")
    parser.add_argument("--peak-tflops", type=float, help="override the device's peak (TFLOP/s)")
    parser.add_argument("--matmul-n", type=int, default=8192, help="size of the measured-peak matmul")
    parser.add_argument("--options", default="baseline",
                        help="comma-separated steps of STEPS, each added on top of the previous "
                             "(e.g. baseline,unsafe_rbg,flash,flatten,mu_bf16), each measured; "
                             "'flash' is cuDNN attention on GPU and the fused XLA path elsewhere")


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    unknown = [o for o in args.options.split(",") if o not in STEPS]
    if unknown:
        parser.error(f"unknown --options {unknown}; choose from {list(STEPS)}")


Build = Callable[[dict, argparse.Namespace], tuple[Any, dict, float, dict]]


def measure_options(args: argparse.Namespace, build: Build, title: str) -> dict:
    """Every cumulative option set of --options measured; the result is written and printed."""
    import jax

    device = jax.devices()[0]
    kind = device.device_kind
    progress(f"{len(jax.devices())} x {kind} ({device.platform}), jax {jax.__version__}; using one")
    if device.platform == "cpu" and not args.smoke:
        progress(f"warning: {title} on CPU is very slow; use --smoke for a functional check")
    measured = matmul_peak_gflops(args.matmul_n, args.dtype) / 1e3
    table = peak_for(kind)
    peak, peak_source = ((args.peak_tflops, "--peak-tflops") if args.peak_tflops else
                         (table, f"table ({kind})") if table else
                         (measured, f"measured {args.dtype} jnp.dot (no table entry for {kind})"))
    runs = []
    for label, efficiency, optimizer, trainer in cumulative_options(args.options.split(","),
                                                                    device.platform):
        progress(f"== {label}: efficiency {efficiency}, optimizer {optimizer}, trainer {trainer}")
        run = measure(args, device, build, efficiency, optimizer, trainer)
        run.update(label=label, efficiency=efficiency, optimizer=optimizer, trainer=trainer,
                   achieved_tflops=run["analytic_flops_per_step"] / run["step_s_median"] / 1e12)
        run["mfu"] = run["achieved_tflops"] / peak
        run["fraction_of_measured_matmul"] = run["achieved_tflops"] / measured
        run["xla_flops_utilisation"] = (run["xla_flops_per_step"] / run["step_s_median"] / 1e12
                                        / peak if run["xla_flops_per_step"] else None)
        runs.append(run)
        progress(f"   MFU {run['mfu']:.1%} ({run['step_s_median'] * 1e3:.1f} ms/step)")
    result = {
        "device_kind": kind, "platform": device.platform, "jax": jax.__version__, "model": title,
        "smoke": args.smoke, "shapes": runs[-1]["shapes"],
        "compute_dtype": args.dtype, "param_dtype": "float32", "dropout": not args.no_dropout,
        "peak_tflops": peak, "peak_source": peak_source, "measured_matmul_tflops": measured,
        **{k: v for k, v in runs[-1].items() if k not in ("label",)},  # the last run, flat
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{title} on {kind}: {runs[-1]['shapes']}, {args.dtype} compute, float32 params, "
          f"dropout {'on' if not args.no_dropout else 'off'}; peak {peak:.4g} TFLOP/s [{peak_source}], "
          f"measured {args.dtype} matmul {measured:.4g} TFLOP/s ({args.matmul_n}^2)")
    previous = None
    for run in runs:
        gain = "" if previous is None else f"  {previous / run['step_s_median']:.2f}x the previous"
        print(f"  {run['label']:50s} {run['step_s_median'] * 1e3:8.1f} ms  "
              f"{run['examples_per_s']:8.0f} examples/s  MFU {run['mfu']:6.1%}  "
              f"{run['fraction_of_measured_matmul']:5.0%} of matmul{gain}")
        previous = run["step_s_median"]
    xla = runs[-1]["xla_flops_per_step"]
    if xla:
        print(f"  XLA's cost analysis counts {xla / runs[-1]['analytic_flops_per_step']:.2f}x the "
              "analytic FLOPs (on GPU it misses most GEMMs)")
    print(f"  wrote {args.out}")
    return result


def measure(args: argparse.Namespace, device: Any, build: Build, efficiency: dict,
            optimizer_options: dict, trainer_options: dict) -> dict:
    """Compile and time the real train step with these switches; timings, FLOPs, final loss."""
    import jax

    from irjax.parallel import partitioning as pt
    from irjax.training.optimizer import OptimizerConfig
    from irjax.training.trainer import Trainer
    from irjax.training.trainer_config import TrainerConfig

    model, host, flops, info = build(efficiency, args)
    rows = len(next(iter(host.values())))
    total = args.warmup + 2 * args.steps
    optimizer = OptimizerConfig(learning_rate=1e-4, decay="constant", weight_decay=0.01,
                                clip_norm=1.0, **optimizer_options)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, tmp, TrainerConfig(num_steps=total, progress_bar=False,
                                                    **trainer_options),
                          optimizer, mesh=pt.create_mesh(1, 1, [device]), console=None)
        state, shardings, source = trainer.initial_state(host)
    params = sum(x.size for x in jax.tree.leaves(state.params))
    progress(f"state from {source}: {params / 1e6:.1f} M params (float32)")
    mesh = trainer.mesh
    batch = pt.global_batch(host, mesh)
    start = time.perf_counter()
    with pt.with_sharding_rules(mesh, trainer.rules):
        compiled = trainer.make_train_step(shardings).lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    xla = xla_flops(compiled)
    progress(f"compiled in {compile_s:.1f} s; analytic {flops / 1e12:.4g} TFLOP/step, XLA "
             + (f"{xla / 1e12:.4g}" if xla else "n/a"))

    def run(s: Any) -> Any:
        s, metrics = compiled(s, batch)
        jax.block_until_ready((s, metrics))
        return s, metrics

    for _ in range(args.warmup):
        state, metrics = run(state)
    progress(f"warm-up done, loss {float(metrics['loss']):.4f}")
    times: list[float] = []
    loop_start = time.perf_counter()
    while len(times) < args.steps and time.perf_counter() - loop_start < args.max_seconds / 2:
        start = time.perf_counter()
        state, metrics = run(state)
        times.append(time.perf_counter() - start)
        if len(times) % 10 == 0:
            progress(f"step {len(times)}/{args.steps}: median {statistics.median(times) * 1e3:.1f} ms")
    # Back to back without blocking, as Trainer.train runs: shows host dispatch overhead, if any.
    start = time.perf_counter()
    for _ in range(len(times)):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    pipelined = (time.perf_counter() - start) / len(times)
    median = statistics.median(times)
    memory = getattr(device, "memory_stats", lambda: None)() or {}
    return {**info, "params": params, "compile_s": compile_s, "steps_timed": len(times),
            "step_s": times, "step_s_median": median, "step_s_back_to_back": pipelined,
            "examples_per_s": rows / median, "tokens_per_s": info["tokens_per_step"] / median,
            "analytic_flops_per_step": flops, "xla_flops_per_step": xla,
            "final_loss": float(metrics["loss"]),
            "peak_memory_bytes": memory.get("peak_bytes_in_use")}


