"""Collects generate_queries workdirs into tools/results/qgen/: one markdown table of queries/s,
generated tokens, kept fractions (at the run's filter depth and at depth 1) and, where the run
fine-tuned, nDCG@10 next to zero-shot; plus each run's samples.md as samples_<label>.md.

    python tools/qgen_summary.py --out tools/results/qgen \\
        scifact_smollm2=workdir/qgen_scifact_32_smollm2_r2 scifact_qwen05=workdir/qgen_scifact_32_qwen05_r2 ...

Timings are single runs on a shared machine: compare rows measured back to back only.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.files import atomic_write_text  # noqa: E402


def row(label: str, workdir: Path) -> dict:
    generation = json.loads((workdir / "generation.json").read_text())
    filtered = [json.loads(line) for line in (workdir / "filtered.jsonl").read_text().splitlines()]
    settings = generation["settings"]
    out = {
        "run": label, "lm": settings["lm_dir"], "documents": generation["documents"],
        "queries": generation["queries"], "rows_per_call": settings["sampling"]["batch_size"],
        "queries_per_s": generation["queries_per_s"],
        "queries_per_s_after_first_part": generation["queries_per_s_after_first_part"],
        "tokens_per_query": generation["generated_tokens"] / max(generation["queries"], 1),
        "prefix_tokens": generation["load_and_filter"].get("prefix_tokens"),
        "filter_depth": generation["filter_depth"], "kept_fraction": generation["kept_fraction"],
        "kept_at_1": sum(r["rank"] == 1 for r in filtered) / max(len(filtered), 1),
        "mean_words": sum(len(r["query"].split()) for r in filtered) / max(len(filtered), 1),
    }
    for name, path in (("nDCG@10", workdir / "metrics.json"),
                       ("zero_shot_nDCG@10", workdir / "zero_shot" / "metrics.json")):
        if path.exists():
            out[name] = json.loads(path.read_text())["metrics"]["nDCG@10"]
    return out


def table(rows: list[dict]) -> str:
    def f(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"
    lines = ["| run | LM | docs x queries | rows/call | queries/s | queries/s after part 1 | tokens/query | "
             "prefix tokens | kept (depth) | kept at depth 1 | words/query | nDCG@10 fine-tuned "
             "(zero-shot) |", "|---" * 12 + "|"]
    for r in rows:
        tuned = (f"{f(r['nDCG@10'], 4)} ({f(r['zero_shot_nDCG@10'], 4)})"
                 if "nDCG@10" in r else "–")
        lines.append(f"| {r['run']} | {r['lm']} | {r['documents']} x "
                     f"{r['queries'] // max(r['documents'], 1)} | {r['rows_per_call']} | "
                     f"{f(r['queries_per_s'])} | "
                     f"{f(r['queries_per_s_after_first_part'])} | {f(r['tokens_per_query'], 1)} | "
                     f"{r['prefix_tokens']} | {f(r['kept_fraction'], 2)} ({r['filter_depth']}) | "
                     f"{f(r['kept_at_1'], 2)} | {f(r['mean_words'], 1)} | {tuned} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("runs", nargs="+", help="label=workdir")
    args = parser.parse_args()
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.runs:
        label, _, workdir = spec.partition("=")
        rows.append(row(label, Path(workdir)))
        shutil.copyfile(Path(workdir) / "samples.md", args.out / f"samples_{label}.md")
    text = table(rows)
    atomic_write_text(args.out / "qgen.md", text)
    atomic_write_text(args.out / "qgen.json", json.dumps(rows, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
