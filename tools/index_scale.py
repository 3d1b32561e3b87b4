"""The index alone at sizes no offline corpus reaches: millions of vectors made from embeddings of
real passages with small perturbations, searched with SciFact test's real query embeddings.

    python tools/index_scale.py --embeddings workdir/scale/encode/embeddings \
        --sizes 1000000,3000000,20000000 --out workdir/index_scale

Vector j is row (j mod B) of the first B real passage embeddings plus Gaussian noise of norm
~`--noise` (seeded by j's chunk), renormalised: the structure of real text embeddings, every
vector distinct. Each size runs in its own process (peak RSS measured by the parent): the index
is built part by part (`ShardedIndex`, `--part-size` vectors each, so no float32 copy of the
whole set ever exists), then the 300 queries are searched in one batch (median of 3) and
compared with sharded exact search over the same vectors (regenerated chunk by chunk). Writes
OUT/index_scale.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.files import atomic_write_text  # noqa: E402

CHUNK = 1 << 18  # vectors generated (and exactly searched) at a time


def base_vectors(embeddings: Path, limit: int) -> np.ndarray:
    from irjax.retrieval.corpus_encoding import EmbeddingShards

    shards = EmbeddingShards.open(embeddings)
    available = sum(len(shards.layout.rows(s)) for s in range(shards.layout.num_shards)
                    if shards.is_complete(s) and all(shards.is_complete(t) for t in range(s)))
    return shards.matrix(min(limit, available))


def chunk(base: np.ndarray, start: int, stop: int, noise: float, seed: int) -> np.ndarray:
    """Vectors [start, stop) of the synthetic set (module docstring); a pure function."""
    out = np.empty((stop - start, base.shape[1]), np.float32)
    for first in range(start - start % CHUNK, stop, CHUNK):
        rng = np.random.default_rng([seed, first // CHUNK])
        rows = np.arange(first, first + CHUNK) % len(base)
        block = base[rows] + rng.normal(0.0, noise / np.sqrt(base.shape[1]),
                                        (CHUNK, base.shape[1])).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        lo, hi = max(first, start), min(first + CHUNK, stop)
        out[lo - start:hi - start] = block[lo - first:hi - first]
    return out


def exact_top_k(base: np.ndarray, size: int, queries: np.ndarray, k: int, noise: float,
                seed: int) -> np.ndarray:
    """Sharded exact search: global top-k rows per query over generated chunks."""
    import jax
    import jax.numpy as jnp

    from irjax.index.sharded import merge_top_k

    best = (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1))
    q = jnp.asarray(queries)
    for start in range(0, size, CHUNK):
        vectors = chunk(base, start, min(start + CHUNK, size), noise, seed)
        scores, top = jax.lax.top_k(jnp.matmul(q, jnp.asarray(vectors).T,
                                               precision=jax.lax.Precision.HIGHEST), k)
        best = merge_top_k([best, (np.asarray(scores), np.asarray(top) + start)], k)
    return best[1]


def query_vectors(cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)
    from irjax.data.resolve import open_collection
    from irjax.models.dual_encoder import TextEncoder

    collection = open_collection("scifact", "test")
    vectors = TextEncoder.from_pretrained().encode(list(collection.eval_queries().values()))
    np.save(cache, vectors)
    return vectors


def run_one(args: argparse.Namespace) -> dict:
    """One size, in this process (the parent measures its peak RSS)."""
    from irjax.index.sharded import ShardedIndex

    base = base_vectors(args.embeddings, args.base_rows)
    queries = query_vectors(args.out / "queries.npy")
    size, k = args.one, 10
    options = json.loads(args.options)
    index = ShardedIndex(args.kind, **options)
    start = time.perf_counter()
    for part, first in enumerate(range(0, size, args.part_size)):
        rows = np.arange(first, min(first + args.part_size, size))
        index.add(part, rows, chunk(base, rows[0], rows[-1] + 1, args.noise, args.seed),
                  [f"v{r}" for r in rows])
        print(f"  part {part}: {rows[-1] + 1:,} vectors indexed", flush=True)
    build_s = time.perf_counter() - start
    index.search(queries, k)  # warm up (compiles, faults pages in)
    times, found = [], None
    for _ in range(3):
        start = time.perf_counter()
        _, found = index.search(queries, k)
        times.append(time.perf_counter() - start)
    truth = exact_top_k(base, size, queries, k, args.noise, args.seed)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))
    saved = args.out / f"index-{size}"
    index.save(saved)
    disk = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    return {"vectors": size, "kind": args.kind, "options": options, "part_size": args.part_size,
            "base_rows": len(base), "build_s": round(build_s, 1),
            "qps": round(len(queries) / statistics.median(times), 1),
            "recall@10": round(recall, 4), "index_disk_bytes_per_vector": round(disk / size, 1),
            "float32_bytes_per_vector": 4 * base.shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--sizes", default="1000000,3000000")
    parser.add_argument("--out", type=Path, default=ROOT / "workdir" / "index_scale")
    parser.add_argument("--kind", default="scann_sharded")
    parser.add_argument("--options", default='{"storage": "int8", "shard_size": 1048576}')
    parser.add_argument("--part-size", type=int, default=2_000_000)
    parser.add_argument("--base-rows", type=int, default=1_000_000)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(run_one(args)), flush=True)
        return
    rows = []
    for size in sorted(int(s) for s in args.sizes.split(",")):
        command = [sys.executable, __file__, *sys.argv[1:], "--one", str(size)]
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"size {size} failed:\n{output[-2000:]}")
        row = json.loads(output.strip().splitlines()[-1])
        row.update(peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
                   wall_s=round(time.perf_counter() - start, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
        atomic_write_text(args.out / "index_scale.json", json.dumps(rows, indent=2) + "\n")
    columns = ("vectors", "kind", "build_s", "qps", "recall@10", "index_disk_bytes_per_vector",
               "float32_bytes_per_vector", "peak_rss_mb", "wall_s")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    atomic_write_text(args.out / "index_scale.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
