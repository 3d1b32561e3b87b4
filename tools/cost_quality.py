"""Bytes per document against quality: every index representation of one encoder's vectors on one
table, per collection, with the Pareto plot.

    python tools/cost_quality.py --out workdir/cost_quality [--datasets scifact:test,nfcorpus:dev]
        [--threads 2] [--smoke] [--learned [LABEL=]WORKDIR ...]

The corpus and the judged queries are encoded once by MiniLM (irjax's DenseRetriever, embedding
shards cached), and every representation is built over the same vectors: exact float32 search,
ScaNN (irjax's default), and the compressed codecs of irjax/index/compressed.py (float16, int8, PQ
with 48/24/12 sub-spaces, binary sign bits; PQ and binary also with a float32 rerank of the top
100). BM25 is the reference line. Per row: bytes per document that search scans (codes; for ScaNN
and exact the index files), bytes on disk, build seconds, queries/s (all queries in one batch,
top 100, pinned to --threads CPUs), nDCG@10 and R@100 (pytrec_eval through irjax.evaluation).
Writes OUT/cost_quality.csv, .md and .png (nDCG@10 against bytes per document, log scale).

Representations that need training (JPQ, BEBR, SPLADE and its inference-free variant, ColBERTer)
come from their configs' workdirs (`--learned`): each WORKDIR/metrics.json gives its row (the
`bytes_per_doc` the job measured, its index build and search seconds, its metrics), so the table
shows them beside the post-hoc codecs without training anything here. Their queries/s is the
job's own batched search over the same judged queries; query encoding is a separate column
(milliseconds per query), where the inference-free model's ~0 shows.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_summary, pin_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (row name, index kind, options); bytes per document of the codes come from the index itself.
REPRESENTATIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("exact float32", "exact", {}),
    ("scann (default)", "scann", {}),
    ("float16", "compressed", {"codec": "float16"}),
    ("int8", "compressed", {"codec": "int8"}),
    ("pq m=48", "compressed", {"codec": "pq", "pq_subspaces": 48}),
    ("pq m=24", "compressed", {"codec": "pq", "pq_subspaces": 24}),
    ("pq m=12", "compressed", {"codec": "pq", "pq_subspaces": 12}),
    ("pq m=24 + rerank 100", "compressed", {"codec": "pq", "pq_subspaces": 24, "rerank": 100}),
    ("binary", "compressed", {"codec": "binary"}),
    ("binary + rerank 100", "compressed", {"codec": "binary", "rerank": 100}),
)
MEASURES = ("nDCG@10", "R@100")
FIELDS = ("dataset", "representation", "bytes_per_doc", "disk_bytes_per_doc", "build_s",
          "queries_per_s", "query_encode_ms", *MEASURES)


def disk_bytes(directory: Path) -> int:
    """Bytes of an index's data files (ids and manifest left out: every index has them)."""
    return sum(p.stat().st_size for p in directory.rglob("*")
               if p.is_file() and p.name not in ("ids.json", "manifest.json"))


def study(dataset: str, split: str, smoke: bool) -> list[dict[str, Any]]:
    from irjax.data.resolve import open_collection
    from irjax.evaluation.metrics import evaluate_run
    from irjax.index.base import create_index
    from irjax.models.dual_encoder import TextEncoder
    from irjax.retrieval.bm25 import BM25Retriever
    from irjax.retrieval.dense import DenseRetriever

    collection = open_collection(dataset, split)
    queries = {q: collection.queries[q] for q in collection.qrels if q in collection.queries}
    if smoke:
        collection = _smoke_subset(collection, queries)
        queries = {q: queries[q] for q in list(collection.qrels)}
    retriever = DenseRetriever(TextEncoder.from_pretrained(), index="exact")
    vectors = retriever.encode_corpus(collection)
    ids = [d.doc_id for d in collection.documents]
    qids = list(queries)
    retriever.encode_queries([queries[q] for q in qids])  # compiles at the timed shapes
    start = time.perf_counter()
    query_vectors = retriever.encode_queries([queries[q] for q in qids])
    query_encode_ms = 1000 * (time.perf_counter() - start) / len(qids)
    k = min(100, len(ids))
    rows = []
    for name, kind, options in REPRESENTATIONS:
        if smoke and kind == "compressed" and options.get("codec") == "pq" and len(ids) < 256:
            continue
        start = time.perf_counter()
        index = create_index(kind, **options).build(vectors, ids)
        build_s = time.perf_counter() - start
        index.search(query_vectors, k)  # compiles / warms up at the timed shape
        start = time.perf_counter()
        result = index.search(query_vectors, k)
        search_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            index.save(Path(tmp) / "index")
            on_disk = disk_bytes(Path(tmp) / "index") / len(ids)
        scanned = getattr(index, "bytes_per_doc", on_disk)
        metrics = evaluate_run(result.to_run(qids), collection.qrels, MEASURES).aggregate
        rows.append({"dataset": f"{dataset}/{split}", "representation": name,
                     "bytes_per_doc": scanned, "disk_bytes_per_doc": on_disk, "build_s": build_s,
                     "queries_per_s": len(qids) / search_s, "query_encode_ms": query_encode_ms,
                     **metrics})
        print(f"  {dataset}/{split} {name:22s} {scanned:8.1f} B/doc  nDCG@10 "
              f"{metrics['nDCG@10']:.4f}  R@100 {metrics['R@100']:.4f}  "
              f"{len(qids) / search_s:8.0f} q/s", flush=True)
    bm25 = BM25Retriever()
    start = time.perf_counter()
    bm25.index(list(ids), [d.contents for d in collection.documents])
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    run = bm25.search(qids, [queries[q] for q in qids], k=k)
    seconds = time.perf_counter() - start
    metrics = evaluate_run(run, collection.qrels, MEASURES).aggregate
    rows.append({"dataset": f"{dataset}/{split}", "representation": "BM25 (reference)",
                 "bytes_per_doc": None, "disk_bytes_per_doc": None, "build_s": build_s,
                 "queries_per_s": len(qids) / seconds, "query_encode_ms": None, **metrics})
    return rows


def learned_row(spec: str) -> dict[str, Any]:
    """One table row from a trained representation's WORKDIR/metrics.json (module docstring);
    `spec` is WORKDIR or LABEL=WORKDIR (the label names the row instead of the model name)."""
    import json

    label, _, location = spec.rpartition("=")
    workdir = Path(location)
    path = workdir / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no metrics.json; run the representation's config first "
                         "(its header names the command)")
    record = json.loads(path.read_text())
    missing = [k for k in ("bytes_per_doc", "metrics", "dataset", "split", "num_queries")
               if k not in record]
    if missing or any(m not in record["metrics"] for m in MEASURES):
        raise SystemExit(f"{path}: missing {missing or list(MEASURES)}; it must come from a "
                         "config that writes bytes_per_doc (gin/train/jpq_scifact.gin and the like)")
    timings = record.get("timings", {})
    search_s = timings.get("search_s") or timings.get("score_s")
    encode_s = timings.get("query_encoding_s", timings.get("encode_queries_s"))
    return {"dataset": f"{record['dataset']}/{record['split']}",
            "representation": label or _row_name(record, workdir),
            "bytes_per_doc": record["bytes_per_doc"], "disk_bytes_per_doc": None,
            "build_s": timings.get("index_build_s", timings.get("build_index_s")),
            "queries_per_s": record["num_queries"] / search_s if search_s else None,
            "query_encode_ms": 1000 * encode_s / record["num_queries"] if encode_s is not None
            else None,
            **{m: record["metrics"][m] for m in MEASURES}}


def _row_name(record: dict[str, Any], workdir: Path) -> str:
    name = record.get("model", workdir.name)
    index = record.get("index")
    return f"{name} ({index})" if isinstance(index, str) and index not in name else name


def _smoke_subset(collection: Any, queries: dict[str, str]) -> Any:
    """The first 5 judged queries and their documents plus 300 others: a seconds-long check."""
    import dataclasses

    qids = list(queries)[:5]
    judged = {d for q in qids for d in collection.qrels[q]}
    documents = [d for d in collection.documents if d.doc_id in judged]
    documents += [d for d in collection.documents if d.doc_id not in judged][:300]
    return dataclasses.replace(collection, documents=documents,
                               qrels={q: collection.qrels[q] for q in qids},
                               queries={q: collection.queries[q] for q in qids})


def pareto_frontier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row beats on both bytes per document (fewer) and nDCG@10 (higher), by
    ascending bytes: the best quality each budget buys."""
    frontier: list[dict[str, Any]] = []
    for r in sorted(rows, key=lambda r: (r["bytes_per_doc"], -r["nDCG@10"])):
        if not frontier or r["nDCG@10"] > frontier[-1]["nDCG@10"]:
            frontier.append(r)
    return frontier


def write_outputs(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "cost_quality.csv.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(out / "cost_quality.csv.tmp", out / "cost_quality.csv")
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    lines = ["| collection | representation | bytes/doc searched | bytes/doc on disk | build s | "
             "queries/s | query encode ms/query | nDCG@10 | R@100 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["dataset"]):
        lines.append(f"| {r['dataset']} | {r['representation']} | {fmt(r['bytes_per_doc'], '.1f')} | "
                     f"{fmt(r['disk_bytes_per_doc'], '.1f')} | {fmt(r['build_s'], '.2f')} | "
                     f"{fmt(r['queries_per_s'], '.0f')} | {fmt(r['query_encode_ms'], '.2f')} | "
                     f"{r['nDCG@10']:.4f} | {r['R@100']:.4f} |")
    (out / "cost_quality.md").write_text("\n".join(lines) + f"\n\n{cpu_summary()}\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        points = [r for r in rows if r["dataset"] == dataset and r["bytes_per_doc"]]
        for r in points:
            ax.scatter(r["bytes_per_doc"], r["nDCG@10"])
            ax.annotate(r["representation"], (r["bytes_per_doc"], r["nDCG@10"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        frontier = pareto_frontier(points)
        ax.step([r["bytes_per_doc"] for r in frontier], [r["nDCG@10"] for r in frontier],
                where="post", color="black", linewidth=1, alpha=0.6, label="Pareto frontier")
        bm25 = [r for r in rows if r["dataset"] == dataset and r["bytes_per_doc"] is None]
        for r in bm25:
            ax.axhline(r["nDCG@10"], color="grey", linestyle="--", linewidth=1, label="BM25")
        ax.set_xscale("log")
        ax.set_xlabel("bytes per document searched")
        ax.set_ylabel("nDCG@10")
        ax.set_title(dataset)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cost_quality.png.tmp.png", dpi=120)
    os.replace(out / "cost_quality.png.tmp.png", out / "cost_quality.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", default="scifact:test,nfcorpus:dev",
                        help="comma-separated dataset:split pairs")
    parser.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))))
    parser.add_argument("--smoke", action="store_true",
                        help="5 queries and ~300 documents of the first dataset")
    parser.add_argument("--learned", nargs="*", default=[], metavar="[LABEL=]WORKDIR",
                        help="workdirs of trained representations (JPQ, BEBR, SPLADE, ColBERTer)")
    args = parser.parse_args()
    learned = [learned_row(w) for w in args.learned]  # bad workdirs fail before any encoding
    pin_threads(args.threads)
    print(cpu_summary(), flush=True)
    rows = []
    pairs = [pair.split(":") for pair in args.datasets.split(",")]
    for dataset, split in pairs[:1] if args.smoke else pairs:
        rows += study(dataset, split, args.smoke)
    for row in learned:
        print(f"  {row['dataset']} {row['representation']:22s} {row['bytes_per_doc']:8.1f} B/doc  "
              f"nDCG@10 {row['nDCG@10']:.4f}  R@100 {row['R@100']:.4f}  (from its workdir)")
    write_outputs(rows + learned, args.out)
    print(f"wrote {args.out}/cost_quality.{{csv,md,png}}")


if __name__ == "__main__":
    main()
