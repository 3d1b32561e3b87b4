"""Approximate search against its peers: queries/s at recall levels, one run, same vectors.

    python tools/ann_peers.py --embeddings workdir/scale/encode/embeddings --rows 100000 \\
        --out workdir/ann_peers [--threads 2] [--k 10]
    python tools/ann_peers.py --smoke --out /tmp/ann      # 3,000 random vectors, a functional check

Vectors: the first --rows rows of an embedding-shard folder (tools/scale_corpus.py + encode_corpus:
SciFact followed by passages recombined from real NFCorpus and Cranfield sentences, MiniLM), and
queries: every SciFact query (1,109) encoded by the same MiniLM. Ground truth: exact top-k
(irjax ExactIndex). Each system is built once and searched at every setting of its sweep, all
queries in one batch, pinned to --threads CPUs:

  irjax ScaNN   tree + asymmetric hashing + exact reorder (irjax/index/scann_index.py), leaves
                searched and reorder depth swept
  faiss HNSW    IndexHNSWFlat, M=32, efConstruction 200, efSearch swept
  faiss IVF-PQ  IndexIVFPQ (nlist 4 sqrt(n), 48 sub-spaces of 8 bits) under IndexRefineFlat,
                nprobe and the refine factor swept

For each recall@k target (0.90, 0.95, 0.99 against exact) the fastest setting of each system that
reaches it, and irjax's queries/s over faiss HNSW's. Writes OUT/ann_peers.json and .md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_summary, pin_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGETS = (0.90, 0.95, 0.99)

Searcher = Callable[[Any, int], Any]  # (queries, k) -> indices [q, k]


def recall_at_k(found: Any, truth: Any) -> float:
    """Mean over queries of |found ∩ truth| / k."""
    import numpy as np

    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)]
    return float(np.mean(hits)) / truth.shape[1]


def scann_settings(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    leaves = max(16, int(round(math.sqrt(n))))
    for to_search in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128):
        for reorder in (100, 200):
            if to_search <= leaves:
                yield (f"leaves {to_search}/{leaves}, reorder {reorder}",
                       {"mode": "tree", "num_leaves": leaves, "leaves_to_search": to_search,
                        "reorder_num_neighbors": reorder})


def faiss_systems(vectors: Any, smoke: bool) -> dict[str, tuple[float, list[tuple[str, Searcher]]]]:
    """{system: (build seconds, [(setting, searcher)])} for HNSW and IVF-PQ + refine."""
    import faiss

    n, d = vectors.shape
    out = {}
    start = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 200
    hnsw.add(vectors)
    built = time.perf_counter() - start

    def hnsw_at(ef: int) -> Searcher:
        def search(queries: Any, k: int) -> Any:
            hnsw.hnsw.efSearch = max(ef, k)
            return hnsw.search(queries, k)[1]
        return search

    out["faiss HNSW M=32"] = (built, [(f"efSearch {ef}", hnsw_at(ef))
                                      for ef in (16, 32, 64, 128, 256, 512)])
    nlist = max(4, int(4 * math.sqrt(n)))
    start = time.perf_counter()
    quantizer = faiss.IndexFlatIP(d)
    ivfpq = faiss.IndexIVFPQ(quantizer, d, nlist, 48 if d % 48 == 0 else 8, 8,
                             faiss.METRIC_INNER_PRODUCT)
    train = vectors[:: max(1, n // (nlist * 50))] if not smoke else vectors
    ivfpq.train(train)
    refine = faiss.IndexRefineFlat(ivfpq)
    refine.add(vectors)
    built = time.perf_counter() - start

    def ivf_at(nprobe: int, factor: int) -> Searcher:
        def search(queries: Any, k: int) -> Any:
            ivfpq.nprobe = nprobe
            refine.k_factor = factor
            return refine.search(queries, k)[1]
        return search

    out[f"faiss IVF-PQ nlist={nlist} + refine"] = (built, [
        (f"nprobe {p}, refine x{f}", ivf_at(p, f))
        for p in (4, 8, 16, 32, 64, 128) if p <= nlist for f in (4, 16)])
    return out


def measure(name: str, build_s: float, settings: list[tuple[str, Searcher]], queries: Any,
            truth: Any, k: int) -> list[dict[str, Any]]:
    rows = []
    for setting, search in settings:
        search(queries[:8], k)  # warm-up
        start = time.perf_counter()
        found = search(queries, k)
        seconds = time.perf_counter() - start
        rows.append({"system": name, "setting": setting, "build_s": build_s,
                     "queries_per_s": len(queries) / seconds,
                     "recall": recall_at_k(found, truth)})
        print(f"  {name:32s} {setting:34s} recall@{k} {rows[-1]['recall']:.4f}  "
              f"{rows[-1]['queries_per_s']:9.0f} q/s", flush=True)
    return rows


def load_vectors(args: argparse.Namespace) -> tuple[Any, Any, str]:
    import numpy as np

    if args.smoke:
        rng = np.random.default_rng(0)
        centers = rng.standard_normal((30, 32)).astype(np.float32)
        vectors = centers[rng.integers(0, 30, 3000)] + 0.3 * rng.standard_normal((3000, 32))
        queries = centers[rng.integers(0, 30, 50)] + 0.3 * rng.standard_normal((50, 32))
        norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
        return norm(vectors), norm(queries), "3,000 clustered random vectors (smoke)"
    from irjax.data.resolve import open_collection
    from irjax.models.dual_encoder import TextEncoder
    from irjax.retrieval.corpus_encoding import EmbeddingShards

    shards = EmbeddingShards.open(args.embeddings)
    vectors = np.ascontiguousarray(shards.matrix(limit=args.rows), dtype=np.float32)
    texts = list(open_collection("scifact", "test").queries.values())
    queries = TextEncoder.from_pretrained().encode(texts)
    return vectors, queries, f"first {len(vectors):,} rows of {args.embeddings}; {len(texts)} SciFact queries"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", type=Path, help="an embedding-shard folder")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if not args.smoke and args.embeddings is None:
        parser.error("--embeddings is required (or --smoke)")
    pin_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    from irjax.index.base import create_index
    from irjax.index.exact import ExactIndex

    print(cpu_summary(), flush=True)
    vectors, queries, source = load_vectors(args)
    n, k = len(vectors), args.k
    ids = [str(i) for i in range(n)]
    truth = ExactIndex().build(vectors, ids).search(queries, k).indices
    rows = []
    scann_rows: list[tuple[str, Searcher]] = []
    build = 0.0
    for setting, options in scann_settings(n):
        start = time.perf_counter()
        index = create_index("scann", **options).build(vectors, ids)
        build = max(build, time.perf_counter() - start)
        scann_rows.append((setting, lambda q, k, index=index: index.search(q, k).indices))
        if args.smoke:
            break
    rows += measure("irjax ScaNN (tree + AH + reorder)", build, scann_rows, queries, truth, k)
    for name, (build_s, settings) in faiss_systems(vectors, args.smoke).items():
        rows += measure(name, build_s, settings, queries, truth, k)
    best: dict[str, dict[str, Any]] = {}
    for target in TARGETS:
        for system in dict.fromkeys(r["system"] for r in rows):
            reached = [r for r in rows if r["system"] == system and r["recall"] >= target]
            if reached:
                best.setdefault(f"{target:.2f}", {})[system] = max(
                    reached, key=lambda r: r["queries_per_s"])
    result = {"cpu": cpu_summary(), "vectors": source, "count": n, "dim": int(vectors.shape[1]),
              "queries": len(queries), "k": k, "threads": args.threads, "rows": rows,
              "best_at_recall": best}
    lines = [f"{source}; recall@{k} against exact search; {args.threads} threads; "
             f"{cpu_summary()}", "", "| recall target | system | setting | recall | queries/s | "
             "vs faiss HNSW |", "|---|---|---|---|---|---|"]
    for target, systems in best.items():
        hnsw = next((r for s, r in systems.items() if "HNSW" in s), None)
        for system, r in systems.items():
            ratio = f"{r['queries_per_s'] / hnsw['queries_per_s']:.2f}x" if hnsw else "(HNSW missed)"
            lines.append(f"| {target} | {system} | {r['setting']} | {r['recall']:.4f} | "
                         f"{r['queries_per_s']:.0f} | {ratio} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ann_peers.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "ann_peers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
