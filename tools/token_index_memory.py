"""Peak memory of a streamed token-index build against the size of the raw token matrix.

Encodes a collection's documents once with the MiniLM token encoder (128-d projection, random:
memory does not depend on training) into chunk files of --chunk-docs documents, then, in a fresh
process per variant, streams those chunks into `TokenIndex.build_streaming`, so the full
[tokens, dim] matrix never exists as one Python array. A sampling thread reads the process RSS every 20 ms; the report compares
the RSS growth during the build (above the RSS after the model is loaded and compiled) with the
raw float32 token matrix, and gives bytes per token of the stored matrix.

Each variant runs in its own process, because peak RSS is a lifetime maximum:

    .venv/bin/python tools/token_index_memory.py --dataset nfcorpus              # all variants
    .venv/bin/python tools/token_index_memory.py --dataset nfcorpus --variant scann:int8

Writes tools/results/token_index_memory_<dataset>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("stream-only:float32", "scann:float32", "scann:int8", "exact:float32",
            "scann_sharded:float32")
# ScaNN settings of gin/train/xtr_scifact.gin; the sharded index adds its shard size.
OPTIONS = {"scann": {"reorder_num_neighbors": 4096, "search_fraction": 0.3},
           "scann_sharded": {"reorder_num_neighbors": 4096, "search_fraction": 0.3,
                             "shard_size": 65_536}}
K_PRIME = 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def current_anon_rss() -> int:
    """Resident anonymous memory: RSS minus file-backed pages (the memmapped token files sit in
    the page cache, count towards RSS, and are dropped by the kernel under memory pressure)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return current_rss()


class PeakSampler:
    """Maximum RSS (total and anonymous) seen while the `with` block runs; sampled every
    `interval` seconds, so a lower bound on the true peak."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, current_rss())
        self.peak_anon = max(self.peak_anon, current_anon_rss())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> "PeakSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def encode_chunks(dataset: str, out: Path, chunk_docs: int, doc_max_length: int) -> None:
    """Encodes the corpus once into chunk files (doc ids + a flat token matrix + lengths)."""
    import jax
    import numpy as np

    from irjax.data.tokenization import WordPieceTokenizer
    from irjax.data.resolve import open_collection
    from irjax.retrieval.multi_vector import MaxSimRetriever, punctuation_ids
    from irjax.models.bert import BertConfig
    from irjax.models.multi_vector import MultiVectorModel
    from irjax.models.pretrained import load_checkpoint

    checkpoint = load_checkpoint()
    config = BertConfig.from_json(checkpoint.config_path)
    tokenizer = WordPieceTokenizer(checkpoint.directory)
    model = MultiVectorModel(config, dim=128)
    ids = tokenizer.encode(["warm up"], 8)
    params = model.init_variables(jax.random.PRNGKey(0), {"pos_ids": ids.ids, "pos_mask": ids.mask})
    encoder = MaxSimRetriever(model, params, tokenizer, doc_max_length=doc_max_length)
    skip = punctuation_ids(tokenizer)
    documents = open_collection(dataset, "dev" if dataset == "nfcorpus" else "test").documents
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, len(documents), chunk_docs)):
        part = documents[start : start + chunk_docs]
        vectors = encoder.encode([d.contents for d in part], doc_max_length, skip)
        keep = [i for i, v in enumerate(vectors) if len(v)]
        np.savez(tmp / f"chunk_{n:05d}.npz", ids=np.array([part[i].doc_id for i in keep]),
                 tokens=np.concatenate([vectors[i] for i in keep]),
                 lengths=np.array([len(vectors[i]) for i in keep]))
        print(f"\r  encoded {start + len(part)}/{len(documents)} docs", end="", flush=True)
    print()
    tmp.replace(out)


def run_variant(chunk_dir: Path, variant: str) -> dict:
    """Streams the chunk files into a token index; RSS is sampled while it builds."""
    import numpy as np

    from irjax.index.token_index import TokenIndex

    kind, dtype = variant.split(":")
    files = sorted(chunk_dir.glob("chunk_*.npz"))

    def chunks() -> Iterator[tuple[list[str], list[np.ndarray]]]:
        for path in files:
            with np.load(path) as z:
                bounds = np.cumsum(z["lengths"])[:-1]
                yield [str(i) for i in z["ids"]], np.split(z["tokens"], bounds)

    baseline, baseline_anon = current_rss(), current_anon_rss()
    start = time.perf_counter()
    if kind == "stream-only":  # the chunked write alone, no ANN: what streaming itself costs
        import tempfile

        from irjax.index.token_index import TokenIndexStats
        with tempfile.TemporaryDirectory() as tmp, PeakSampler() as sampler:
            doc_ids, dim, n = TokenIndex._write_chunks(chunks(), Path(tmp), dtype)
        stats = TokenIndexStats(len(doc_ids), n, dim, dtype, 4 * dim, 4 * dim * n, 4 * dim * n, 0)
    else:
        with PeakSampler() as sampler:
            index = TokenIndex.build_streaming(chunks(), kind=kind, dtype=dtype,
                                               **OPTIONS.get(kind, {}))
        stats = index.stats
    recall = None if kind == "stream-only" else token_recall(index, files)
    return {"variant": variant, "recall_at_k_prime": recall, "num_docs": stats.num_docs,
            "num_tokens": stats.num_tokens,
            "dim": stats.dim, "chunks": len(files), "raw_float32_bytes": stats.raw_float32_bytes,
            "stored_matrix_bytes": stats.stored_matrix_bytes,
            "bytes_per_token": stats.bytes_per_token,
            "rss_baseline_bytes": baseline, "rss_peak_bytes": sampler.peak,
            "rss_growth_bytes": sampler.peak - baseline,
            "growth_over_raw": (sampler.peak - baseline) / stats.raw_float32_bytes,
            "anon_growth_bytes": sampler.peak_anon - baseline_anon,
            "anon_growth_over_raw": (sampler.peak_anon - baseline_anon) / stats.raw_float32_bytes,
            "seconds": round(time.perf_counter() - start, 1)}


def token_recall(index, files: list[Path], queries: int = 200) -> float:
    """Recall@K_PRIME of the index's token search against exact search, for doc tokens of the
    first chunk used as queries (how well it serves XTR's top-k' retrieval)."""
    import numpy as np

    with np.load(files[0]) as z:
        rng = np.random.default_rng(0)
        q = z["tokens"][rng.choice(len(z["tokens"]), queries, replace=False)]
    matrix = np.concatenate([np.load(f)["tokens"] for f in files])
    truth = np.argpartition(-(q @ matrix.T), K_PRIME, axis=1)[:, :K_PRIME]
    found = index._ann.search(q, K_PRIME).indices
    return float(np.mean([len(set(a) & set(b)) / K_PRIME for a, b in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="nfcorpus")
    parser.add_argument("--variant", choices=VARIANTS, help="one variant in this process")
    parser.add_argument("--chunk-docs", type=int, default=256)
    parser.add_argument("--doc-max-length", type=int, default=192)
    parser.add_argument("--chunk-dir", type=Path, help="encoded chunks (default: a cache dir)")
    args = parser.parse_args()
    chunk_dir = args.chunk_dir or (Path(os.environ.get("IRJAX_CACHE_DIR", Path.home() / ".cache"
                                                       / "irjax")) / "token_chunks"
                                   / f"{args.dataset}-{args.chunk_docs}-{args.doc_max_length}")
    if args.variant:
        print(json.dumps(run_variant(chunk_dir, args.variant)))
        return
    if not chunk_dir.exists():
        print(f"encoding {args.dataset} once into {chunk_dir}", flush=True)
        encode_chunks(args.dataset, chunk_dir, args.chunk_docs, args.doc_max_length)
    rows = []
    for variant in VARIANTS:
        print(f"== {variant}", flush=True)
        out = subprocess.run([sys.executable, __file__, "--dataset", args.dataset, "--variant",
                              variant, "--chunk-dir", str(chunk_dir)], check=True,
                             capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mib = 2 ** 20
    print(f"\n{args.dataset}: {rows[0]['num_docs']} docs, {rows[0]['num_tokens']:,} tokens x "
          f"{rows[0]['dim']} (raw float32 matrix {rows[0]['raw_float32_bytes'] / mib:.0f} MiB)")
    print("| variant | bytes/token | stored matrix MiB | peak RSS growth MiB (/ raw) | "
          "of which anonymous MiB (/ raw) | build s | recall@1024 vs exact |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['bytes_per_token']} | {r['stored_matrix_bytes'] / mib:.0f} | "
              f"{r['rss_growth_bytes'] / mib:.0f} ({r['growth_over_raw']:.2f}) | "
              f"{r['anon_growth_bytes'] / mib:.0f} ({r['anon_growth_over_raw']:.2f}) | "
              f"{r['seconds']} | {r['recall_at_k_prime'] if r['recall_at_k_prime'] is not None else '-'} |")
    out_path = ROOT / "tools" / "results" / f"token_index_memory_{args.dataset}.json"
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    tmp.replace(out_path)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
