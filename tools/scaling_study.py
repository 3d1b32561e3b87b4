"""Scaling study of generative retrieval: R@10 of DSI and of the dual encoder as the corpus grows,
every run at the same training compute.

    .venv/bin/python tools/scaling_study.py --dataset scifact --sizes 1000,2000,3600,5183 \\
        --workdir workdir/scaling --budget-steps 84
    .venv/bin/python tools/scaling_study.py --quick --dataset DIR --sizes 12,25 --workdir /tmp/s

For each size N: `irjax.data.subcorpus` writes an N-document subset in BEIR layout (every
document relevant to an eval or train query kept, random fill; WORKDIR/subsets/nN), then the
unchanged training jobs run on it as subprocesses of `python -m irjax.main` (a fresh gin state
each): --dsi-gin (gin/train/dsi_mini_scifact.gin) and --de-gin (gin/train/minilm_scifact.gin), with
DATA_DIR pointing at the subset, into WORKDIR/runs/<family>/nN.

Matched compute: a run's compute is its training FLOPs, 6 x params x tokens per part of the model
(irjax.models.compute_budget), from the configs' shapes -- read from the same gin files and
bindings the job gets. The budget is --budget-flops, or --budget-steps dual-encoder steps; each
family gets round(budget / its FLOPs per step) steps, so the families differ from the budget by at
most half a step. With --budget-scaling linear the budget grows with N (the given one is for the
largest N), i.e. equal compute per document rather than per run. After a run the FLOPs are
recomputed from what the job itself recorded (training_summary.json, docids.json) and must match.

Outputs: WORKDIR/scaling.csv (one row per run: steps, FLOPs, wall time, nDCG@10, R@10, RR@10,
R@100), WORKDIR/scaling.png (R@10 against corpus size, log x, one line per family),
WORKDIR/plan.json, and per run scaling_run.json next to the job's own files. Resumable: a run
whose metrics.json exists is not rerun, and a killed job resumes from its checkpoint. --plan
writes the subsets and plan.json and prints every job's command line without training (how the
MS MARCO study is launched on a TPU pod, see launch/scaling_msmarco.md). --quick: tiny T5, small
batches and lengths, a one-step budget; for tests and CI.

Measured (2-core CPU shared with other jobs): see launch/scaling_msmarco.md, "CPU runtime".
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.files import atomic_write_bytes, atomic_write_text  # noqa: E402

FAMILIES = ("dsi", "dual_encoder")
_CHILD_ENV = dict(os.environ)  # the jobs' environment: this process itself runs on the CPU
ZERO_SHOT = "dual_encoder_zero_shot"
JOB = {"dsi": "train_dsi", "dual_encoder": "train_dual_encoder"}
MEASURES = ("R@10", "nDCG@10", "RR@10", "R@100")
QUICK = {
    "dsi": ["train_dsi.t5_preset = 'tiny'", "train_dsi.t5_overrides = {'dropout_rate': 0.0}",
            "DSIData.global_batch_size = 4", "DSIData.inputs_max_length = 24",
            "OptimizerConfig.learning_rate = 1e-2", "OptimizerConfig.warmup_fraction = 0.0",
            "TrainerConfig.checkpoint_every = 1000", "TrainerConfig.log_every = 50",
            "train_dsi.beam_size = 4", "train_dsi.eval_batch_size = 8"],
    "dual_encoder": ["DataConfig.global_batch_size = 2", "DataConfig.num_hard_negatives = 0",
                     "DataConfig.query_max_length = 16",
                     "DataConfig.doc_max_length = 32", "train_dual_encoder.eval_max_length = 32",
                     "TrainerConfig.checkpoint_every = 1000", "TrainerConfig.log_every = 1"],
}
CSV_COLUMNS = ("dataset", "family", "model", "corpus_size", "eval_queries", "train_queries",
               "sampled_queries", "steps", "flops_per_step", "flops", "budget_flops",
               "flops_over_budget", "matmul_params", "total_params", "tokens_per_step", "wall_s",
               "train_steps_per_s", *MEASURES, "run_dir")


# -- configs ------------------------------------------------------------------------------------
def job_bindings(family: str, args: argparse.Namespace, data_dir: Path, workdir: Path,
                 steps: int) -> list[str]:
    """Every binding a job gets after its gin file: the study's, --quick's, the user's, steps."""
    job = JOB[family]
    own = [f"DATA_DIR = '{data_dir}'", f"WORKDIR = '{workdir}'", f"SPLIT = '{args.eval_split}'",
           f"{job}.train_split = '{args.train_split}'"]
    if family == "dsi":
        own += ["train_dsi.dense_baseline = False", "train_dsi.reference_metrics = []"]
    else:
        own += [f"train_dual_encoder.evaluate_zero_shot = {bool(args.zero_shot)}",
                "TrainerConfig.eval_every = None"]
    user = args.dsi_binding if family == "dsi" else args.de_binding
    for binding in user:
        key = binding.split("=", 1)[0].strip()
        if key in ("TrainerConfig.num_steps", "TrainerConfig.num_epochs"):
            raise SystemExit(f"--{'dsi' if family == 'dsi' else 'de'}-binding {binding!r}: the "
                             "study sets the steps from the FLOP budget; change --budget-* instead")
    return [*own, *(QUICK[family] if args.quick else []), *user, f"TrainerConfig.num_steps = {steps}"]


def _gin_setting(selector: str, default: Any) -> Any:
    """A parsed gin binding (macros resolved), else the function's default."""
    import gin

    try:
        value = gin.query_parameter(selector)
    except ValueError:
        return default
    if isinstance(value, gin.config.ConfigurableReference) and value.configurable.name == "macro":
        return gin.query_parameter(f"{'/'.join(value.scopes)}/macro.value")
    return value


def _defaults(fn: Any) -> dict[str, Any]:
    import inspect

    return {k: p.default for k, p in inspect.signature(fn).parameters.items()}


def read_settings(family: str, gin_file: str, bindings: list[str]) -> dict[str, Any]:
    """The settings that fix a step's shapes, as the job will see them (same file, same bindings)."""
    import gin

    from irjax import gin_config
    from irjax.jobs import pair_data, train_dsi, train_dual_encoder

    gin.clear_config()
    try:
        gin_config.parse([gin_file], bindings)
        bound = gin.query_parameter("irjax.run.job").selector
        if bound != JOB[family]:
            raise SystemExit(f"{gin_file} runs {bound!r}, not {JOB[family]!r}")
        if family == "dsi":
            fn, data = _defaults(train_dsi.train_dsi), _defaults(train_dsi.DSIData)
            names, data_names = ("t5_preset", "t5_overrides", "docid_scheme", "scheme_options",
                                 "pretrained"), ("global_batch_size", "inputs_max_length")
            scope = "DSIData"
        else:
            fn, data = _defaults(train_dual_encoder.train_dual_encoder), \
                _defaults(pair_data.DataConfig)
            names, data_names = ("pretrained", "shared_towers"), (
                "global_batch_size", "query_max_length", "doc_max_length", "num_hard_negatives")
            scope = "DataConfig"
        settings = {n: _gin_setting(f"{JOB[family]}.{n}", fn[n]) for n in names}
        settings.update({n: _gin_setting(f"{scope}.{n}", data[n]) for n in data_names})
        return settings
    finally:
        gin.clear_config()


def step_cost(family: str, settings: dict[str, Any], data_dir: Path, run_dir: Path,
              train_split: str) -> Any:
    """FLOPs of one step. For DSI the docid scheme fixes the vocabulary and target length, so it
    is built here and saved as the run's docids.json, which the job then loads instead."""
    from irjax.models import compute_budget as cb

    if family == "dual_encoder":
        from irjax.models.bert import BertConfig
        from irjax.models.pretrained import load_checkpoint

        config = BertConfig.from_json(load_checkpoint(settings["pretrained"]).config_path)
        return cb.dual_encoder_step_cost(
            config, settings["global_batch_size"], settings["query_max_length"],
            settings["doc_max_length"], settings["num_hard_negatives"], settings["shared_towers"])
    from irjax.data.collection import load_collection
    from irjax.models.t5 import T5Config
    from irjax.jobs.train_dsi import docid_scheme_for, model_vocab_size

    scheme = docid_scheme_for(load_collection(data_dir, train_split), run_dir,
                              settings["docid_scheme"], settings["scheme_options"] or {},
                              settings["pretrained"])
    config = T5Config.preset(settings["t5_preset"], vocab_size=model_vocab_size(scheme),
                             **dict(settings["t5_overrides"] or {}))
    return cb.dsi_step_cost(config, settings["global_batch_size"], settings["inputs_max_length"],
                            scheme.max_length + 1)


def recorded_steps(family: str, run_dir: Path, planned: Any) -> int:
    """The steps the job trained, after checking that the shapes it recorded (training_summary.json,
    docids.json) give the planned FLOPs per step: a config the study misread cannot go unnoticed."""
    from irjax.models import compute_budget as cb

    summary = json.loads((run_dir / "training_summary.json").read_text())
    data = summary["data"]
    if family == "dsi":
        from irjax.data.docids import load_docid_scheme
        from irjax.models.t5 import T5Config

        t5 = T5Config(**{k: v for k, v in summary["t5"].items() if k != "dtype"})
        scheme = load_docid_scheme(run_dir / "docids.json")
        cost = cb.dsi_step_cost(t5, data["global_batch_size"], data["inputs_max_length"],
                                scheme.max_length + 1)
    else:
        part = planned.parts["towers"][0]
        tokens = data["global_batch_size"] * (data["query_max_length"] + (
            1 + data["num_hard_negatives"]) * data["doc_max_length"])
        cost = cb.StepCost("dual_encoder", {"towers": (part, tokens)}, tokens,
                           planned.total_params)
    if not math.isclose(cost.flops_per_step, planned.flops_per_step, rel_tol=1e-9):
        raise RuntimeError(f"{run_dir}: the job ran {cost.flops_per_step:.4g} FLOPs per step but "
                           f"the study planned {planned.flops_per_step:.4g}; the shapes read from "
                           "gin differ from the job's (a scoped binding?)")
    return summary["steps"]


# -- running ------------------------------------------------------------------------------------
def command(family: str, args: argparse.Namespace, bindings: list[str]) -> list[str]:
    """`python -m irjax.main` with the family's gin file and bindings, or the same arguments
    after --launcher (e.g. `launch/tpu_vm.sh run NAME ZONE --`, which runs them on every worker)."""
    gin_file = args.dsi_gin if family == "dsi" else args.de_gin
    prefix = shlex.split(args.launcher) if args.launcher else [sys.executable, "-m", "irjax.main"]
    return [*prefix, f"--gin_file={gin_file}",
            *(f"--gin.{k.strip()}={v.strip()}" for k, v in (b.split("=", 1) for b in bindings))]


def shell_join(cmd: list[str]) -> str:
    """A copy-pasteable command line that keeps gin's single quotes readable."""
    def quote(arg: str) -> str:
        if not any(c in arg for c in " '\"$`\\{}[]*?;&|<>()!#~"):
            return arg
        if not any(c in arg for c in '"$`\\!'):
            return f'"{arg}"'
        return shlex.quote(arg)
    return " ".join(quote(a) for a in cmd)


def _steps_per_s(run_dir: Path) -> float | None:
    """Median logged training speed, the first (compiling) log line left out."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    speeds = [r["steps_per_sec"] for r in rows if "steps_per_sec" in r][1:]
    return statistics.median(speeds) if speeds else None


def run_job(cmd: list[str], run_dir: Path, timeout: float | None) -> float:
    """Runs one job, its output in run_dir/job.log; returns the wall time."""
    env = {**_CHILD_ENV, "PYTHONUNBUFFERED": "1"}
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
    log_path = run_dir / "job.log"
    start = time.perf_counter()
    with open(log_path, "ab") as log:
        log.write(f"$ {shell_join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout)
    if proc.returncode:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"job failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}")
    return time.perf_counter() - start


def execute(run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Runs (or reuses) one planned run and returns its scaling_run.json record."""
    run_dir = Path(run["run_dir"])
    record_path = run_dir / "scaling_run.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    if record is not None and record["steps"] != run["steps"]:
        raise SystemExit(f"{run_dir} holds a run of {record['steps']} steps, the plan asks for "
                         f"{run['steps']}; use another --workdir or remove that directory")
    if (run_dir / "metrics.json").exists() and record is not None and "wall_s" in record:
        return record
    if not (run_dir / "metrics.json").exists():
        atomic_write_text(record_path, json.dumps(run, indent=2) + "\n")
        wall = run_job(run["command"], run_dir, args.run_timeout)
    else:
        wall = None  # finished before the study could record it
    steps = recorded_steps(run["family"], run_dir, args.costs[run["family"], run["size"]])
    if steps != run["steps"]:
        raise RuntimeError(f"{run_dir}: the job trained {steps} steps, the plan {run['steps']}")
    record = {**run, "wall_s": wall, "train_steps_per_s": _steps_per_s(run_dir)}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record


# -- results ------------------------------------------------------------------------------------
def rows_for(record: dict[str, Any], subset: dict[str, Any], dataset: str,
             args: argparse.Namespace) -> list[dict[str, Any]]:
    run_dir = Path(record["run_dir"])
    splits = subset["splits"]
    base = {"dataset": dataset, "corpus_size": record["size"],
            "eval_queries": splits[args.eval_split]["queries_kept"],
            "train_queries": splits.get(args.train_split, {}).get("queries_kept", 0),
            "sampled_queries": subset["sampled_queries"], "budget_flops": record["budget_flops"]}
    cost = record["cost"]
    out = []
    sources = [(record["family"], run_dir, record["steps"], cost)]
    if record["family"] == "dual_encoder" and (run_dir / "zero_shot" / "metrics.json").exists():
        sources.append((ZERO_SHOT, run_dir / "zero_shot", 0, None))
    for family, directory, steps, c in sources:
        metrics = json.loads((directory / "metrics.json").read_text())
        flops = steps * c["flops_per_step"] if c else 0.0
        out.append({**base, "family": family, "model": metrics["model"], "steps": steps,
                    "flops_per_step": c["flops_per_step"] if c else 0.0, "flops": flops,
                    "flops_over_budget": flops / record["budget_flops"],
                    "matmul_params": c["matmul_params"] if c else "",
                    "total_params": c["total_params"] if c else "",
                    "tokens_per_step": c["tokens_per_step"] if c else "",
                    "wall_s": "" if not c or record["wall_s"] is None else round(record["wall_s"], 1),
                    "train_steps_per_s": record["train_steps_per_s"] if c else "",
                    **{m: metrics["metrics"].get(m, "") for m in MEASURES},
                    "run_dir": str(directory)})
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """R@10 against corpus size, one line per family, log-x; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for family in sorted({r["family"] for r in rows}):
        points = sorted((r["corpus_size"], r["R@10"]) for r in rows if r["family"] == family)
        model = next(r["model"] for r in rows if r["family"] == family)
        ax.plot([p[0] for p in points], [p[1] for p in points],
                "--" if family == ZERO_SHOT else "-", marker="o", label=f"{family} ({model})")
    sizes = sorted({r["corpus_size"] for r in rows})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.minorticks_off()
    ax.set_ylim(0, 1.04)
    ax.set_xlabel("corpus size (documents, log scale)")
    ax.set_ylabel("R@10")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


# -- the study ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="name under $IRJAX_DATA_DIR or a BEIR folder")
    p.add_argument("--sizes", required=True, help="corpus sizes, e.g. 1000,2000,3600,5183")
    p.add_argument("--workdir", required=True, type=Path)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-steps", type=float,
                        help="budget = this many dual-encoder steps' FLOPs (default 84; --quick 1)")
    budget.add_argument("--budget-flops", type=float, help="budget in training FLOPs per run")
    p.add_argument("--budget-scaling", choices=("fixed", "linear"), default="fixed",
                   help="fixed: the same budget at every size; linear: proportional to the size")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--eval-split", default="test")
    p.add_argument("--train-split", default="train")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets")
    p.add_argument("--dsi-gin", default="gin/train/dsi_mini_scifact.gin")
    p.add_argument("--de-gin", default="gin/train/minilm_scifact.gin")
    p.add_argument("--dsi-binding", action="append", default=[], help="extra gin binding (DSI)")
    p.add_argument("--de-binding", action="append", default=[], help="extra gin binding (DE)")
    p.add_argument("--zero-shot", action="store_true",
                   help="also record the zero-shot dual encoder (0 training FLOPs)")
    p.add_argument("--quick", action="store_true", help="tiny models and shapes (tests, CI)")
    p.add_argument("--plan", action="store_true",
                   help="write subsets and plan.json, print the commands, train nothing")
    p.add_argument("--run-timeout", type=float, help="seconds one job may take")
    p.add_argument("--launcher", help="command that runs irjax.main's arguments in place of "
                   "`python -m irjax.main`, e.g. 'launch/tpu_vm.sh run NAME ZONE --'")
    args = p.parse_args(argv)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(args.families) - set(FAMILIES)
    if unknown or not args.families:
        p.error(f"--families: choose from {FAMILIES}, got {args.families}")
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        p.error(f"--sizes must be integers separated by commas, got {args.sizes!r}")
    if not args.sizes or args.sizes[0] < 1:
        p.error("--sizes needs at least one positive size")
    if args.budget_steps is None and args.budget_flops is None:
        args.budget_steps = 1 if args.quick else 84
    return args


def plan_runs(args: argparse.Namespace, workdir: Path
              ) -> tuple[float, dict[str, Any], list[dict[str, Any]]]:
    """The budget, the shape settings read from gin, and every run with its steps and command.
    Sets `args.costs[(family, size)]`, the planned StepCost that finished runs are checked against."""
    from irjax.models.compute_budget import steps_for_budget

    subset = lambda n: workdir / "subsets" / f"n{n}"  # noqa: E731
    run_dir = lambda f, n: workdir / "runs" / f / f"n{n}"  # noqa: E731
    # --budget-steps counts dual-encoder steps, so that family's cost is needed even without it.
    wanted = sorted(set(args.families) | ({"dual_encoder"} if args.budget_steps else set()))
    settings = {f: read_settings(f, args.dsi_gin if f == "dsi" else args.de_gin,
                                 job_bindings(f, args, subset(args.sizes[0]), workdir, 1))
                for f in wanted}
    args.costs = {(f, n): step_cost(f, settings[f], subset(n), run_dir(f, n), args.train_split)
                  for f in wanted for n in args.sizes}
    budget = args.budget_flops or (args.budget_steps
                                   * args.costs["dual_encoder", args.sizes[0]].flops_per_step)
    runs = []
    for n in args.sizes:
        size_budget = budget * (n / args.sizes[-1] if args.budget_scaling == "linear" else 1.0)
        for f in args.families:
            cost = args.costs[f, n]
            steps = steps_for_budget(size_budget, cost)
            run_dir(f, n).mkdir(parents=True, exist_ok=True)
            runs.append({"family": f, "size": n, "run_dir": str(run_dir(f, n)), "steps": steps,
                         "budget_flops": size_budget, "flops": steps * cost.flops_per_step,
                         "cost": cost.to_json(), "command": command(
                             f, args, job_bindings(f, args, subset(n), run_dir(f, n), steps))})
    return budget, settings, runs


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    # Planning (subsets, docid schemes) is host work: keep this process off the accelerator,
    # which the jobs need (a TPU admits one process; on a GPU jax would preallocate its memory).
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", "cpu")
    from irjax.data.resolve import resolve_dataset
    from irjax.data.subcorpus import make_subcorpus

    source = resolve_dataset(args.dataset)
    workdir = args.workdir.resolve()
    subsets = {}
    for size in args.sizes:
        subsets[size] = make_subcorpus(source, workdir / "subsets" / f"n{size}", size,
                                       eval_split=args.eval_split, train_split=args.train_split,
                                       seed=args.seed)
        if subsets[size]["note"]:
            print(f"subset n{size}: {subsets[size]['note']}", flush=True)

    budget, settings, runs = plan_runs(args, workdir)
    atomic_write_text(workdir / "plan.json", json.dumps(
        {"dataset": str(source), "budget_flops": budget, "budget_scaling": args.budget_scaling,
         "settings": settings, "subsets": subsets, "runs": runs}, indent=2, default=str) + "\n")
    if args.plan:
        for r in runs:
            print(f"# {r['family']} n={r['size']}: {r['steps']} steps x "
                  f"{r['cost']['flops_per_step']:.3g} = {r['flops']:.3g} FLOPs "
                  f"(budget {r['budget_flops']:.3g})\n{shell_join(r['command'])}")
        return []

    rows: list[dict[str, Any]] = []
    for i, run in enumerate(runs, 1):
        done = (Path(run["run_dir"]) / "metrics.json").exists()
        record = execute(run, args)
        new = rows_for(record, subsets[run["size"]], source.name, args)
        rows += new
        r10 = new[0]["R@10"]
        wall = "reused" if done else f"{record['wall_s']:.0f} s"
        print(f"[{i}/{len(runs)}] {run['family']:12s} n={run['size']:<7d} steps={run['steps']:<6d}"
              f" FLOPs={record['flops']:.3g} ({record['flops'] / run['budget_flops']:.3f} of "
              f"budget)  R@10={r10:.4f}  {wall}", flush=True)
        write_csv(rows, workdir / "scaling.csv")
    scaling = "per run" if args.budget_scaling == "fixed" else f"per run at n={args.sizes[-1]}"
    plot(rows, workdir / "scaling.png", f"{source.name}: R@10 vs corpus size, "
         f"{budget:.3g} training FLOPs {scaling}")
    print(f"wrote {workdir / 'scaling.csv'} and {workdir / 'scaling.png'}")
    return rows


if __name__ == "__main__":
    main()
