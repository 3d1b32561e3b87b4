"""Every query-time method of issue #16 on one table: what each moves nDCG@10 by, at what cost.

    python tools/query_time_study.py --out workdir/query_time_study \
        [--datasets scifact:test,nfcorpus:dev,cranfield:test] [--methods bm25,minilm,...] \
        [--max-queries 100] [--learned LABEL@DATASET=WORKDIR ...] [--dry-run]

Each method is a gin config run through `python -m irjax.main` into OUT/<dataset>_<split>/<method>/
(skipped when its metrics.json exists, so the study resumes after a kill and reruns only what is
missing). Slow LM methods run on the split's first 50 or 100 judged queries (`max_queries` below,
or `--max-queries` for all of them; evaluate_retriever.max_queries). `--learned` adds rows from workdirs that already hold a
metrics.json (fine-tuned retrievers, AR2, the trained cross-encoder), without training anything;
one named '<row>-...' (e.g. 'bm25-ce-d100') or '<row>>>...' (e.g.
'embeddinggemma-768>>ce-e8-d100') is compared against that row.

Per row: queries evaluated, nDCG@10, R@100, the change in nDCG@10 against the method's base (BM25
or zero-shot MiniLM) **on the same queries** (from both runs' per_query.jsonl, so a 100-query row
is compared with its base on those 100 queries), the time the method adds per query (reranking,
LM generation or LM encoding of the query, from metrics.json's timings) and the LM tokens it
processes per query. Writes OUT/study.md, OUT/study.csv, OUT/study.json.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
from bench_common import cpu_summary  # noqa: E402

from irjax.files import atomic_write_text  # noqa: E402

MEASURES = ("nDCG@10", "R@100")


@dataclass(frozen=True)
class Method:
    gin_file: str
    bindings: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # the row its nDCG@10 change is measured against
    max_queries: int | None = None  # slow LM methods: the split's first judged queries only


SMOL = "'smollm2-135m-instruct'"


METHODS: dict[str, Method] = {
    "bm25": Method("gin/eval/bm25.gin"),
    "minilm": Method("gin/eval/minilm.gin", {"INDEX": "'exact'"}),
    # listwise / attention rerankers of BM25's top 10 (passages cut to 64 tokens)
    "bm25-first-smollm2-d10": Method("gin/eval/first_rerank.gin", {"LM": SMOL, "DEPTH": "10"},
                                     "bm25", 50),
    "bm25-icr-smollm2-d10": Method("gin/eval/icr_rerank.gin", {"LM": SMOL, "DEPTH": "10"},
                                   "bm25", 50),
    # LM query expansion (4 HyDE passages; 10 GenQREnsemble instructions, query x5 for BM25)
    "bm25-hyde-smollm2": Method("gin/eval/hyde.gin", {"LM": SMOL, "FIRST_STAGE": "'bm25'"},
                                "bm25", 100),
    "bm25-hyde-smollm2-q5": Method(
        "gin/eval/hyde.gin", {"LM": SMOL, "FIRST_STAGE": "'bm25'",
                              "hyde_retriever.query_repeats": "5"}, "bm25", 100),
    "minilm-hyde-smollm2": Method("gin/eval/hyde.gin", {"LM": SMOL, "FIRST_STAGE": "'minilm'"},
                                  "minilm", 100),
    "bm25-genqr-smollm2": Method("gin/eval/genqr_ensemble.gin",
                                 {"LM": SMOL, "FIRST_STAGE": "'bm25'"}, "bm25", 100),
    "minilm-genqr-smollm2": Method("gin/eval/genqr_ensemble.gin",
                                   {"LM": SMOL, "FIRST_STAGE": "'minilm'"}, "minilm", 100),
    # PromptReps: the LM's one-word representation as the first stage itself (whole splits)
    **{f"promptreps-smollm2-{variant}": Method("gin/eval/promptreps.gin",
                                               {"LM": SMOL, "VARIANT": f"'{variant}'"}, "bm25")
       for variant in ("dense", "sparse", "hybrid")},
}

# Keys of metrics.json's timings that are time added per query by the method (ms) and LM tokens
# per query; a row sums the ones it has.
ADDED_MS_KEYS = ("rerank_ms_per_query", "lm_ms_per_query", "query_encoding_ms_per_query")
LM_TOKEN_SUFFIX = "lm_tokens_per_query"


def read_per_query(workdir: Path, measure: str = "nDCG@10") -> dict[str, float]:
    path = workdir / "per_query.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {str(r["query_id"]): float(r[measure]) for r in rows}


def added_cost(timings: dict[str, float]) -> tuple[float | None, float | None]:
    """(ms per query, LM tokens per query) the method adds; None where it reports none."""
    ms = [float(timings[k]) for k in ADDED_MS_KEYS if k in timings]
    tokens = [float(v) for k, v in timings.items() if k.endswith(LM_TOKEN_SUFFIX)]
    return (sum(ms) if ms else None), (sum(tokens) if tokens else None)


def delta_on_same_queries(row_dir: Path, base_dir: Path | None) -> float | None:
    if base_dir is None:
        return None
    row, base = read_per_query(row_dir), read_per_query(base_dir)
    shared = sorted(set(row) & set(base))
    if not shared or len(shared) < len(row):
        return None
    return sum(row[q] - base[q] for q in shared) / len(shared)


def run_method(label: str, method: Method, dataset: str, split: str, workdir: Path,
               max_queries: int | None, dry_run: bool) -> bool:
    """Runs one config into `workdir` unless it already holds metrics.json; False on failure."""
    if (workdir / "metrics.json").exists():
        return True
    bindings = {"DATA_DIR": f"'{dataset}'", "SPLIT": f"'{split}'", "WORKDIR": f"'{workdir}'",
                **method.bindings}
    queries = max_queries or method.max_queries
    if method.max_queries and queries:
        bindings["evaluate_retriever.max_queries"] = str(queries)
    command = [sys.executable, "-m", "irjax.main", f"--gin_file={method.gin_file}",
               *(f"--gin.{k}={v}" for k, v in bindings.items())]
    print(f"[{time.strftime('%H:%M:%S')}] {dataset}/{split} {label}: {' '.join(command[1:])}",
          flush=True)
    if dry_run:
        return False
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir.parent / f"{label}.log", "w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        print(f"  failed (exit {done.returncode}); see {workdir.parent / f'{label}.log'}",
              flush=True)
        return False
    return True


def learned_base(label: str, dirs: dict[str, Path]) -> str | None:
    """A --learned row named '<row>>>...' (e.g. 'embeddinggemma-768>>ce-e8') is compared against
    <row>, one named '<row>-...' (e.g. 'bm25-ce-d100') against the row before its first '-'."""
    head = label.split(">>", 1)[0] if ">>" in label else label.split("-", 1)[0]
    return head if head != label and head in dirs else None


def table_rows(out: Path, specs: list[tuple[str, str]], methods: list[str],
               learned: dict[tuple[str, str], Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for dataset, split in specs:
        key = f"{dataset}_{split}"
        dirs = {label: out / key / label for label in methods}
        dirs.update({label: path for (label, ds), path in learned.items() if ds == dataset})
        for label, directory in dirs.items():
            metrics_file = directory / "metrics.json"
            if not metrics_file.exists():
                continue
            record = json.loads(metrics_file.read_text())
            method = METHODS.get(label)
            base = method.base if method else learned_base(label, dirs)
            base_dir = dirs.get(base) if base else None
            ms, tokens = added_cost(record.get("timings", {}))
            delta = delta_on_same_queries(directory, base_dir)
            rows.append({"dataset": f"{dataset} {split}", "method": label,
                         "queries": record.get("num_queries"),
                         **{m: record["metrics"].get(m) for m in MEASURES},
                         "base": base or "", "delta_nDCG@10": delta,
                         "added_ms_per_query": ms, "lm_tokens_per_query": tokens})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ["dataset", "method", "queries", *MEASURES, "Δ nDCG@10 (vs base, same queries)",
            "added ms/query", "LM tokens/query"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(value: Any, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    for r in rows:
        delta = "–" if r["delta_nDCG@10"] is None else f"{r['delta_nDCG@10']:+.4f} ({r['base']})"
        lines.append("| " + " | ".join([
            r["dataset"], r["method"], str(r["queries"]), fmt(r["nDCG@10"], ".4f"),
            fmt(r["R@100"], ".4f"), delta, fmt(r["added_ms_per_query"], ".1f"),
            fmt(r["lm_tokens_per_query"], ".0f")]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", default="scifact:test,nfcorpus:dev,cranfield:test")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from: {', '.join(METHODS)}")
    parser.add_argument("--max-queries", type=int, default=None,
                        help="judged queries for every slow LM method, instead of each one's own "
                             "default (50 or 100)")
    parser.add_argument("--learned", nargs="*", default=[], metavar="LABEL@DATASET=WORKDIR")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: tabulate the rows whose metrics.json exist")
    args = parser.parse_args()
    specs = [tuple(s.split(":", 1)) for s in args.datasets.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    learned: dict[tuple[str, str], Path] = {}
    for item in args.learned:
        label, sep, path = item.partition("=")
        name, at, dataset = label.partition("@")
        if not (sep and at and name and dataset):
            parser.error(f"--learned {item!r}: expected LABEL@DATASET=WORKDIR")
        if not (Path(path) / "metrics.json").exists():
            parser.error(f"--learned {item!r}: {path}/metrics.json does not exist")
        learned[(name, dataset)] = Path(path)
    print(cpu_summary(), flush=True)
    failed = []
    for dataset, split in [] if args.table_only else specs:
        for label in methods:
            if not run_method(label, METHODS[label], dataset, split,
                              args.out / f"{dataset}_{split}" / label,
                              args.max_queries, args.dry_run):
                failed.append(f"{dataset}:{split}/{label}")
    if args.dry_run:
        return
    rows = table_rows(args.out, specs, methods, learned)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "study.md", markdown(rows))
    atomic_write_text(args.out / "study.json", json.dumps(rows, indent=1) + "\n")
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else ["dataset"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.out / "study.csv", table.getvalue())
    print(markdown(rows))
    if failed:
        print(f"failed: {failed}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
