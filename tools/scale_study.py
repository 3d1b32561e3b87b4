"""Retrieval as the corpus grows: SciFact test's real queries and judgments against SciFact's
corpus plus N distractor passages (tools/scale_corpus.py), for each N, with exact search and
ScaNN over the same MiniLM embeddings. One command, resumable:

    python tools/scale_study.py --workdir workdir/scale --sizes 0,10000,30000,100000,300000,1000000

1. builds WORKDIR/scifact_1m/ (SciFact + max(sizes) distractors) unless it exists;
2. encodes it with the encode_corpus job into WORKDIR/encode/embeddings (resumes; --no-encode
   uses only what is encoded, --encode-only stops after encoding);
3. for every N whose rows are encoded, runs the evaluation command twice (INDEX exact, scann)
   as separate processes on the corpus's first 5,183 + N documents, each measured for peak RSS;
4. writes WORKDIR/scale.{csv,md,json,png}: encode docs/s, index build seconds, bytes per
   document, peak RSS, batched queries/s, nDCG@10 and R@100 for both, and ScaNN's recall@10 and
   recall@100 against exact search.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scale_corpus import build  # noqa: E402

from irjax.files import atomic_write_text  # noqa: E402

BASE_DOCS = 5183
KINDS = ("exact", "scann")
COLUMNS = ("distractors", "documents", "encode_docs_per_s", "embedding_mb",
           "exact_build_s", "exact_qps", "exact_nDCG@10", "exact_R@100", "exact_bytes_per_doc",
           "exact_peak_rss_mb", "scann_build_s", "scann_qps", "scann_nDCG@10", "scann_R@100",
           "scann_bytes_per_doc", "scann_peak_rss_mb", "scann_recall@10", "scann_recall@100")


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    keep = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags]
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "?")
    return f"{model}; {os.cpu_count()} cpus; {' '.join(keep)}"


def run_measured(command: list[str], log_path: Path) -> tuple[int, float, float]:
    """(exit status, wall seconds, peak RSS in MB) of one child process."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss / 1024


def encode(args: argparse.Namespace, corpus: Path) -> Path:
    out = args.workdir / "encode"
    command = [sys.executable, "-m", "irjax.main", "--gin_file=gin/encode/minilm.gin",
               f"--gin.DATA_DIR='{corpus}'", f"--gin.WORKDIR='{out}'",
               f"--gin.encode_corpus.shard_size={args.shard_size}"]
    if not args.no_encode:
        code, seconds, rss = run_measured(command, args.workdir / "encode.log")
        if code != 0:
            sys.exit(f"encoding failed (exit {code}); see {args.workdir / 'encode.log'}")
        print(f"encoding done in {seconds:.0f} s, peak RSS {rss:.0f} MB", flush=True)
    return out / "embeddings"


def encoded_rows(embeddings: Path) -> tuple[int, dict[int, dict]]:
    """Rows encoded from the start (complete shards in order) and each shard's marker."""
    manifest = json.loads((embeddings / "manifest.json").read_text())
    size, count = manifest["shard_size"], manifest["count"]
    markers: dict[int, dict] = {}
    rows = 0
    for shard in range(-(-count // size)):
        path = embeddings / f"shard-{shard:05d}.done"
        if not path.exists():
            break
        markers[shard] = json.loads(path.read_text())
        rows = markers[shard]["rows"][1]
    return rows, markers


def encode_rate(markers: dict[int, dict], rows: int) -> float:
    """Documents per second over the shards that cover the first `rows` rows."""
    used = [m for m in markers.values() if m["rows"][0] < rows]
    docs = sum(m["rows"][1] - m["rows"][0] for m in used)
    return docs / max(sum(m["seconds"] for m in used), 1e-9)


def evaluate(args: argparse.Namespace, corpus: Path, embeddings: Path, documents: int,
             kind: str) -> dict:
    out = args.workdir / "runs" / f"{documents - BASE_DOCS}" / kind
    result_path = out / "measured.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "irjax.main", "--gin_file=gin/eval/minilm.gin",
               f"--gin.DATA_DIR='{corpus}'", "--gin.SPLIT='test'", f"--gin.INDEX='{kind}'",
               f"--gin.WORKDIR='{out}'", "--gin.evaluate_retriever.streamed=True",
               f"--gin.evaluate_retriever.max_documents={documents}",
               f"--gin.DenseRetriever.embeddings='{embeddings}'",
               f"--gin.DenseRetriever.save_index_to='{out / 'index'}'",
               "--gin.DenseRetriever.index_parts=1"]  # one index over all rows (a ScaNN tree)
    code, seconds, rss = run_measured(command, out / "eval.log")
    if code != 0:
        sys.exit(f"{kind} evaluation at {documents} documents failed (exit {code}); see "
                 f"{out / 'eval.log'}")
    metrics = json.loads((out / "metrics.json").read_text())
    index_bytes = sum(p.stat().st_size for p in (out / "index").rglob("*") if p.is_file())
    measured = {"wall_s": seconds, "peak_rss_mb": rss, "index_bytes": index_bytes, **metrics}
    atomic_write_text(result_path, json.dumps(measured, indent=2) + "\n")
    return measured


def top_sets(run_path: Path, k: int) -> dict[str, set[str]]:
    from irjax.data.runs import rank_documents, read_trec_run

    return {q: {d for d, _ in rank_documents(docs)[:k]}
            for q, docs in read_trec_run(run_path).items()}


def recall_against(exact_run: Path, approx_run: Path, k: int) -> float:
    exact, approx = top_sets(exact_run, k), top_sets(approx_run, k)
    values = [len(exact[q] & approx.get(q, set())) / len(exact[q]) for q in exact if exact[q]]
    return sum(values) / len(values)


def row(args: argparse.Namespace, corpus: Path, embeddings: Path, distractors: int,
        markers: dict[int, dict]) -> dict:
    documents = BASE_DOCS + distractors
    out = {"distractors": distractors, "documents": documents,
           "encode_docs_per_s": round(encode_rate(markers, documents), 1),
           "embedding_mb": round(documents * json.loads(
               (embeddings / "manifest.json").read_text())["dim"] * 4 / 2**20, 1)}
    runs = {}
    for kind in KINDS:
        m = evaluate(args, corpus, embeddings, documents, kind)
        runs[kind] = args.workdir / "runs" / str(distractors) / kind / "run.trec"
        timings = m["timings"]
        out.update({f"{kind}_build_s": timings["index_build_s"],
                    f"{kind}_qps": round(timings["search_queries_per_s"], 1),
                    f"{kind}_nDCG@10": round(m["metrics"]["nDCG@10"], 4),
                    f"{kind}_R@100": round(m["metrics"]["R@100"], 4),
                    f"{kind}_bytes_per_doc": round(m["index_bytes"] / documents, 1),
                    f"{kind}_peak_rss_mb": round(m["peak_rss_mb"], 1)})
    for k in (10, 100):
        out[f"scann_recall@{k}"] = round(recall_against(runs["exact"], runs["scann"], k), 4)
    return out


def write_outputs(workdir: Path, rows: list[dict], header: dict) -> None:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    atomic_write_text(workdir / "scale.md", "\n".join(
        [f"# Scaling: SciFact test + N distractors ({header['machine']})", "",
         f"Corpus: {json.dumps(header['corpus'])}", "", *lines, ""]))
    with open(workdir / "scale.csv.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(workdir / "scale.csv.tmp", workdir / "scale.csv")
    atomic_write_text(workdir / "scale.json", json.dumps({**header, "rows": rows}, indent=2))
    plot(workdir, rows)


def plot(workdir: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["documents"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, style in (("exact", "o-"), ("scann", "s--")):
        left.plot(sizes, [r[f"{kind}_nDCG@10"] for r in rows], style, label=f"{kind} nDCG@10")
        left.plot(sizes, [r[f"{kind}_R@100"] for r in rows], style, alpha=0.5,
                  label=f"{kind} R@100")
    left.set(xscale="log", xlabel="documents (SciFact + distractors)", ylabel="SciFact test",
             title="Quality as the corpus grows")
    left.legend()
    right.plot(sizes, [r["scann_recall@10"] for r in rows], "s-", label="recall@10 vs exact")
    right.plot(sizes, [r["scann_recall@100"] for r in rows], "^-", label="recall@100 vs exact")
    right.set(xscale="log", xlabel="documents", ylabel="ScaNN recall", ylim=(0.8, 1.0),
              title="ScaNN against exact search")
    right.legend()
    fig.tight_layout()
    tmp = workdir / "scale.tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, workdir / "scale.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "workdir" / "scale")
    parser.add_argument("--sizes", default="0,10000,30000,100000,300000,1000000")
    parser.add_argument("--corpus-distractors", type=int, default=1_000_000,
                        help="distractors in the one corpus every size is a prefix of")
    parser.add_argument("--shard-size", type=int, default=16384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-encode", action="store_true",
                        help="use only the shards encoded so far (sizes beyond them are skipped)")
    parser.add_argument("--encode-only", action="store_true")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if max(sizes) > args.corpus_distractors:
        sys.exit(f"--sizes go up to {max(sizes)} but the corpus has --corpus-distractors "
                 f"{args.corpus_distractors}")
    n = args.corpus_distractors
    corpus = args.workdir / (f"scifact_{n // 10**6}m" if n % 10**6 == 0 else f"scifact_{n}")
    info = build(corpus, n, args.seed)
    print(f"corpus {corpus}: {json.dumps(info)}", flush=True)
    embeddings = encode(args, corpus)
    if args.encode_only:
        return
    rows_done, markers = encoded_rows(embeddings)
    rows = []
    for n in sizes:
        if BASE_DOCS + n > rows_done:
            print(f"N={n}: only {rows_done} rows encoded; skipped (run without --no-encode)")
            continue
        rows.append(row(args, corpus, embeddings, n, markers))
        print(json.dumps(rows[-1]), flush=True)
    header = {"machine": cpu_flags(), "corpus": info, "encoded_rows": rows_done,
              "sizes_skipped": [n for n in sizes if BASE_DOCS + n > rows_done]}
    write_outputs(args.workdir, rows, header)
    print((args.workdir / "scale.md").read_text())


if __name__ == "__main__":
    main()
