#!/usr/bin/env python
"""DSI ablations in one command: every ingredient of gin/train/dsi_scifact.gin switched off (or
swapped) in turn at one budget, each row one train_dsi job, and the table of nDCG@10, R@10 and
R@100 per row with each ingredient's effect on R@10 next to the direction the literature reports.

    nice -n 10 python tools/dsi_ablation.py --out workdir/dsi_ablation \\
        --dual-encoder /path/to/minilm_scifact/checkpoints [--steps 500] [--rows full,no_spans]

Rows run one after another in OUT/<row>/ (a finished row, one with metrics.json, is read, not
rerun, so the command resumes); OUT/ablation.csv and OUT/ablation.md are rewritten after every
row; OUT/rows.json keeps each row's wall time. `--table-only` just rebuilds the table. A row that
fails is reported and the next one runs. Rows that need an input the run lacks are skipped with
the reason (`plus_generated` needs `--pseudo-queries`, the JSONL of gin/train/qg_scifact.gin).

The "untrained" row is the full row's model before training (its WORKDIR/init/), and "dual
encoder" the fine-tuned dual encoder evaluated in that same job (WORKDIR/dense/): both cost
nothing extra.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_GIN = "gin/train/dsi_scifact.gin"
MEASURES = ("nDCG@10", "R@10", "R@100")


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    ingredient: str           # what the row changes, as read in the table
    bindings: tuple[str, ...]
    # The effect of the ingredient is R@10(with) - R@10(without); `sign` says which side this
    # row is: -1 when the row leaves the ingredient out (effect = full - row), +1 when it adds it.
    sign: int = -1
    literature: str = "-"     # the direction reported elsewhere, with its source
    needs: str | None = None  # an input the row cannot run without


PRADEEP = "Pradeep et al. 2023, NQ100k R@1, T5-base atomic"
ROWS: tuple[Row, ...] = (
    Row("full", "warm start (fine-tuned DE encoder + rows), doc start + labelled + spans, atomic",
        (), sign=0),
    Row("no_spans", "random 64-word spans (10 per doc)", ("DSIData.spans_per_doc = 0",),
        literature=f"+1.4 ({PRADEEP}: 60.0 -> 61.4 on top of the doc start)"),
    Row("no_doc_start", "the document's start (indexing)",
        ("DSIData.indexing_to_retrieval_ratio = 0.0",),
        literature=f"+9.3 ({PRADEEP}: labelled only 50.7 -> 60.0)"),
    Row("no_labelled", "labelled train queries", ("DSIData.retrieval_weight = 0.0",),
        literature="+ (every paper trains on them)"),
    Row("plus_sentences", "every sentence of each document", ("DSIData.sentence_weight = 1.0",),
        sign=+1, literature="n/a (not ablated by Pradeep et al.)"),
    Row("plus_generated", "generated queries (--pseudo-queries: gin/train/qg_scifact.gin's T5-mini)",
        ("DSIData.pseudo_queries = %PSEUDO_QUERIES", "DSIData.pseudo_query_weight = 1.0"),
        sign=+1, literature=f"+8.2 ({PRADEEP}: 61.4 -> 69.6, docT5query from pretrained T5)",
        needs="pseudo_queries"),
    Row("encoder_minilm", "fine-tuned encoder (vs pretrained MiniLM; rows still from the DE)",
        ("WarmStart.encoder = 'minilm'",), literature="n/a (new here)"),
    Row("no_output_rows", "output rows from DE embeddings + pooling decoder start",
        ("WarmStart.output_rows = False",), literature="n/a (new here)"),
    Row("no_warm_start", "warm start at all (vs T5-mini from scratch, lr 1e-3)",
        ("train_dsi.warm_start = None", "train_dsi.t5_preset = 'mini'",
         "train_dsi.t5_overrides = {'dropout_rate': 0.1}", "OptimizerConfig.learning_rate = 1e-3",
         "OptimizerConfig.warmup_fraction = 0.05"),
        literature="+ (Rothe et al. 2020: BERT-initialised seq2seq >> random init, ~ pretrained T5)"),
    Row("semantic", "atomic docids (vs semantic: hierarchical k-means over the fine-tuned DE)",
        ("DOCIDS = 'semantic'", "train_dsi.scheme_options = {'normalize': True}"),
        literature="- in DSI (Tay et al. 2022, T5-base: semantic ids beat atomic); + in "
                   "Pradeep et al. 2023 once parameters grow with the corpus"),
    Row("semantic_balanced", "atomic docids (vs prefix-balanced semantic docids)",
        ("DOCIDS = 'semantic'", "train_dsi.scheme_options = {'normalize': True, 'balanced': True}"),
        literature="-"),
)
DERIVED = ("untrained", "dual encoder")


def row_command(row: Row, out: Path, args: argparse.Namespace) -> list[str]:
    bindings = [f"WORKDIR='{out / row.name}'", f"DUAL_ENCODER='{args.dual_encoder}'",
                f"DATA_DIR='{args.data_dir}'"]
    if args.steps:
        bindings.append(f"TrainerConfig.num_steps = {args.steps}")
    if args.pseudo_queries:
        bindings.append(f"PSEUDO_QUERIES = '{args.pseudo_queries}'")
    if row.name != "full":  # only the full row evaluates the untrained model and the dense baseline
        bindings += ["train_dsi.evaluate_init = False", "train_dsi.dense_baseline = False"]
    bindings += list(row.bindings) + list(args.bind or [])
    return [sys.executable, "-m", "irjax.main", f"--gin_file={args.base}",
            *[f"--gin.{b}" for b in bindings]]


def read_metrics(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def collect(out: Path, rows: tuple[Row, ...]) -> list[dict]:
    """One record per row with metrics (rows not run yet are left out)."""
    timings = read_metrics(out / "rows.json") or {}
    records = []
    full = read_metrics(out / "full" / "metrics.json")
    for row in rows:
        metrics = read_metrics(out / row.name / "metrics.json")
        if metrics is None:
            continue
        records.append({"row": row.name, "ingredient": row.ingredient, "sign": row.sign,
                        "literature": row.literature, "metrics": metrics["metrics"],
                        "minutes": timings.get(row.name, {}).get("minutes"),
                        "decode_qps": metrics.get("timings", {}).get("queries_per_s")})
        if row.name == "full":
            for name, sub in (("untrained", "init"), ("dual encoder", "dense")):
                derived = read_metrics(out / "full" / sub / "metrics.json")
                if derived is not None:
                    records.append({"row": name, "ingredient": {
                        "untrained": "training at all (the full model at step 0)",
                        "dual encoder": "the fine-tuned dual encoder itself (same job)"}[name],
                        "sign": -1 if name == "untrained" else 0, "literature": "-",
                        "metrics": derived["metrics"], "minutes": None,
                        "decode_qps": derived.get("timings", {}).get("queries_per_s")})
    base = full["metrics"]["R@10"] if full else None
    for r in records:  # rounded, so that an effect of exactly nothing reads +0.0000, not -0.0000
        r["effect_R@10"] = (None if base is None or not r["sign"]
                            else round(r["sign"] * (r["metrics"]["R@10"] - base), 6) + 0.0)
    return records


def write_table(out: Path, records: list[dict], args: argparse.Namespace) -> str:
    header = ["row", *MEASURES, "effect of the ingredient on R@10", "ingredient",
              "literature (direction of the same ingredient)", "minutes"]
    with open(out / "ablation.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", *MEASURES, "effect_R@10", "ingredient", "literature", "minutes"])
        for r in records:
            writer.writerow([r["row"], *(f"{r['metrics'][m]:.4f}" for m in MEASURES),
                             "" if r["effect_R@10"] is None else f"{r['effect_R@10']:+.4f}",
                             r["ingredient"], r["literature"],
                             "" if r["minutes"] is None else f"{r['minutes']:.1f}"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        effect = "" if r["effect_R@10"] is None else f"{r['effect_R@10']:+.4f}"
        minutes = "" if r["minutes"] is None else f"{r['minutes']:.1f}"
        lines.append("| " + " | ".join([r["row"], *(f"{r['metrics'][m]:.4f}" for m in MEASURES),
                                        effect, r["ingredient"], r["literature"], minutes]) + " |")
    budget = f"{args.steps} steps" if args.steps else "the config's steps"
    note = (f"\nSciFact {args.split if hasattr(args, 'split') else 'test'}; base config "
            f"{args.base}; budget: {budget} per row; effect = R@10 with "
            "the ingredient minus without it (a no_X row leaves X out of the full row, a plus_X "
            "row adds it).\n")
    table = "\n".join(lines) + "\n" + note
    (out / "ablation.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("workdir/dsi_ablation"))
    parser.add_argument("--base", default=BASE_GIN)
    parser.add_argument("--dual-encoder", default="workdir/minilm_scifact",
                        help="the fine-tuned dual encoder's WORKDIR or checkpoints")
    parser.add_argument("--data-dir", default="scifact")
    parser.add_argument("--steps", type=int, default=None, help="training steps of every row")
    parser.add_argument("--rows", default=None,
                        help=f"comma-separated subset of {[r.name for r in ROWS]}")
    parser.add_argument("--pseudo-queries", default=None,
                        help="generated queries (JSONL) for the plus_generated row")
    parser.add_argument("--bind", action="append", help="extra gin binding for every row")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    wanted = args.rows.split(",") if args.rows else [r.name for r in ROWS]
    unknown = sorted(set(wanted) - {r.name for r in ROWS})
    if unknown:
        parser.error(f"unknown rows {unknown}; rows are {[r.name for r in ROWS]}")
    rows = tuple(r for r in ROWS if r.name in wanted)
    args.out.mkdir(parents=True, exist_ok=True)
    timings_path = args.out / "rows.json"
    timings = read_metrics(timings_path) or {}
    failures = 0
    for row in () if args.table_only else rows:
        if row.needs == "pseudo_queries" and not args.pseudo_queries:
            print(f"== {row.name}: skipped (needs --pseudo-queries)", flush=True)
            continue
        if (args.out / row.name / "metrics.json").exists():
            print(f"== {row.name}: done before, read", flush=True)
            continue
        command = row_command(row, args.out, args)
        print("== " + row.name + ": " + " ".join(command), flush=True)
        if args.dry_run:
            continue
        start = time.time()
        with open(args.out / f"{row.name}.log", "a") as log:
            rc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ.copy()).returncode
        minutes = (time.time() - start) / 60
        timings[row.name] = {"minutes": round(minutes, 2), "returncode": rc,
                             "command": " ".join(command)}
        timings_path.write_text(json.dumps(timings, indent=2) + "\n")
        print(f"== {row.name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {minutes:.1f} min",
              flush=True)
        failures += rc != 0
        write_table(args.out, collect(args.out, ROWS), args)
    if not args.dry_run:
        print(write_table(args.out, collect(args.out, ROWS), args))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
