"""ANNCUR against exact k-NN under the same pair scorer, at several cross-encoder budgets.

    python tools/anncur_study.py --out workdir/anncur_study/minilm --scorer minilm \
        [--dataset scifact --split test --queries 50 --docs 1000 --anchor-queries 500 \
         --items 50,100,200 --depths 0,50,100] [--results tools/results/anncur/minilm]
    python tools/anncur_study.py --out workdir/anncur_study/ce --scorer cross-encoder:DIR \
        --max-length 128 ...

The setting of Yadav et al. 2022: the first `--queries` judged queries of the split, a sub-corpus
of `--docs` documents (every document judged for those queries, then a seeded random fill in
corpus order), and the first `--anchor-queries` judged queries of `--anchor-split` as anchors.
Every (query, document) pair of anchors and test queries is scored once (row blocks saved under
OUT/matrix/, so a killed run resumes); ANNCUR (irjax.retrieval.anncur.AnnCURRetriever) then runs
at each budget with a scorer that looks its pairs up in that matrix -- the same numbers the
scorer would return, since it is deterministic, without paying for them again. Reported per
budget (k_i anchor items + rerank depth = cross-encoder calls per query): recall of the exact
top-10 and top-100 inside ANNCUR's top-10 and top-100, nDCG@10 and R@100 (pytrec_eval through
irjax.evaluation); beside them exact scoring of the whole sub-corpus and, at the same call
budget, BM25's top-B reranked by the scorer (the retrieve-then-rerank baseline).
Writes OUT/anncur.json and OUT/anncur.md (and copies both to --results when given).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.data.collection import Collection, LoadReport, load_qrels  # noqa: E402
from irjax.data.resolve import open_collection  # noqa: E402
from irjax.data.runs import Run, rank_documents  # noqa: E402
from irjax.evaluation.metrics import evaluate_run  # noqa: E402
from irjax.files import atomic_write_bytes, atomic_write_text, sha256_file  # noqa: E402
from irjax.retrieval.anncur import AnnCURRetriever, score_matrix  # noqa: E402
from irjax.retrieval.bm25 import SparseRetriever  # noqa: E402

log = logging.getLogger("anncur_study")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def sub_collection(full: Collection, queries: int, docs: int, seed: int) -> Collection:
    """The first `queries` judged queries and `docs` documents: every judged one, then a seeded
    random fill, in corpus order."""
    sub = full.first_judged_queries(queries)
    judged = {d for grades in sub.qrels.values() for d in grades}
    if len(judged) > docs:
        raise SystemExit(f"--docs {docs} cannot hold the {len(judged)} judged documents")
    others = [d.doc_id for d in full.documents if d.doc_id not in judged]
    order = np.random.default_rng(seed).permutation(len(others))
    keep = judged | {others[i] for i in order[:docs - len(judged)]}
    documents = [d for d in full.documents if d.doc_id in keep]
    return Collection(f"{full.name}-sub{docs}", full.split, full.path, documents, full.queries,
                      sub.qrels, LoadReport({"documents": len(documents)}))


class LookupScorer:
    """A PairScorer answering from a precomputed matrix (query text -> row, document text ->
    column); a pair outside it is an error, so nothing is silently invented."""

    def __init__(self, name: str, matrix: np.ndarray, queries: Sequence[str],
                 documents: Sequence[str]):
        self.name, self.matrix = name, matrix
        self.fingerprint = hashlib.sha256(matrix.tobytes()).hexdigest()
        self.rows = {t: i for i, t in enumerate(queries)}
        self.cols = {t: j for j, t in enumerate(documents)}
        self.costs: dict[str, float] = {}

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        return self.matrix[[self.rows[q] for q in queries], [self.cols[d] for d in documents]]


def make_scorer(spec: str, max_length: int) -> tuple[Any, str]:
    """('minilm' | 'cross-encoder:DIR') -> (PairScorer, fingerprint of what scores)."""
    if spec == "minilm":
        from irjax.models.dual_encoder import TextEncoder
        from irjax.retrieval.encoder_pair_scorer import EncoderPairScorer

        scorer = EncoderPairScorer(TextEncoder.from_pretrained(max_length=max_length))
        return scorer, scorer.fingerprint
    if spec.startswith("cross-encoder:"):
        from irjax.models.cross_encoder import CrossEncoderScorer

        path = Path(spec.split(":", 1)[1])
        scorer = CrossEncoderScorer.load(path, max_length=max_length, batch_size=32)
        return scorer, f"ce:{sha256_file(path / 'model.safetensors')}:{max_length}"
    raise SystemExit(f"--scorer {spec!r}: use 'minilm' or 'cross-encoder:DIR'")


def scored_matrix(scorer: Any, fingerprint: str, queries: list[str], documents: list[str],
                  out: Path, block: int) -> tuple[np.ndarray, float]:
    """All pairs, row blocks of `block` queries saved as they finish; returns the matrix and the
    measured pairs/s of the blocks scored in this call (nan if all were cached)."""
    key = hashlib.sha256(json.dumps([fingerprint, queries, documents]).encode()).hexdigest()[:16]
    folder = out / "matrix" / key
    rows, seconds, scored = [], 0.0, 0
    for start in range(0, len(queries), block):
        path = folder / f"rows_{start:06d}.npy"
        if path.exists():
            rows.append(np.load(path))
            continue
        t0 = time.perf_counter()
        part = score_matrix(scorer, queries[start:start + block], documents, batch_size=256)
        seconds += time.perf_counter() - t0
        scored += part.size
        buffer = io.BytesIO()
        np.save(buffer, part)
        atomic_write_bytes(path, buffer.getvalue())
        rows.append(part)
        log.info("scored rows %d-%d of %d (%.1f pairs/s)", start, start + len(part),
                 len(queries), scored / max(seconds, 1e-9))
    return np.concatenate(rows), (scored / seconds if scored else float("nan"))


def top_recall(run: Run, exact: Run, k: int) -> float:
    """Mean over queries of |top-k of run ∩ top-k of exact| / k."""
    return float(np.mean([len({d for d, _ in rank_documents(run[q])[:k]} &
                               {d for d, _ in rank_documents(exact[q])[:k]}) / k
                          for q in exact]))


def row(name: str, run: Run, exact: Run, qrels: dict, calls: float) -> dict[str, Any]:
    metrics = evaluate_run(run, qrels, measures=("nDCG@10", "R@100")).aggregate
    return {"method": name, "ce_calls_per_query": calls,
            "top10_recall": top_recall(run, exact, 10), "top100_recall": top_recall(run, exact, 100),
            "nDCG@10": float(metrics["nDCG@10"]), "R@100": float(metrics["R@100"])}


def markdown(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [f"# ANNCUR on {header['dataset']}/{header['split']}: {header['queries']} queries x "
             f"{header['docs']} documents, {header['anchor_queries']} anchor queries "
             f"({header['anchor_split']}), scorer {header['scorer']}", "",
             f"Scorer throughput while building the matrix: {header['pairs_per_s']:.1f} pairs/s "
             f"({header['cpu']}). Command: `{header['command']}`", "",
             "| method | CE calls/query | top-10 recall | top-100 recall | nDCG@10 | R@100 |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['ce_calls_per_query']:.0f} | {r['top10_recall']:.3f} | "
                     f"{r['top100_recall']:.3f} | {r['nDCG@10']:.4f} | {r['R@100']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--scorer", default="minilm")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--anchor-split", default="train")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--anchor-queries", type=int, default=500)
    parser.add_argument("--items", type=ints, default=ints("50,100,200"))
    parser.add_argument("--depths", type=ints, default=ints("0,50,100"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block", type=int, default=10, help="query rows per saved block")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    full = open_collection(args.dataset, args.split)
    collection = sub_collection(full, args.queries, args.docs, args.seed)
    tests = collection.eval_queries()
    judged_anchor = load_qrels(Path(str(full.path)) / "qrels" / f"{args.anchor_split}.tsv")
    anchors = dict([(q, t) for q, t in full.queries.items()
                    if q in judged_anchor and q not in tests][:args.anchor_queries])
    documents = [d.contents for d in collection.documents]
    scorer, fingerprint = make_scorer(args.scorer, args.max_length)
    texts = list(anchors.values()) + list(tests.values())
    matrix, pairs_per_s = scored_matrix(scorer, fingerprint, texts, documents, args.out, args.block)
    lookup = LookupScorer(scorer.name, matrix, texts, documents)

    exact_scores = matrix[len(anchors):]
    exact: Run = {q: {collection.doc_ids[j]: float(exact_scores[i, j]) for j in
                      np.argsort(-exact_scores[i])[:100]} for i, q in enumerate(tests)}
    rows = [row("exact (every document scored)", exact, exact, collection.qrels,
                float(len(documents)))]
    for items in args.items:
        for depth in args.depths:
            retriever = AnnCURRetriever(lookup, num_anchor_items=items, rerank_depth=depth,
                                        anchor_queries=anchors, seed=args.seed,
                                        cache_dir=str(args.out / "anchor_cache"))
            run = retriever.retrieve(collection, tests, k=100)
            rows.append(row(f"ANNCUR k_i={items} depth={depth}", run, exact, collection.qrels,
                            retriever.timings["ce_calls_per_query"]))
    budgets = sorted({i + d for i in args.items for d in args.depths} | {100})
    bm25 = SparseRetriever().retrieve(collection, tests, k=max(budgets))
    rows.append(row("BM25 (no CE)", bm25, exact, collection.qrels, 0.0))
    column = {doc_id: j for j, doc_id in enumerate(collection.doc_ids)}
    for budget in budgets:
        reranked: Run = {}
        for i, q in enumerate(tests):
            head = [d for d, _ in rank_documents(bm25[q])[:budget]]
            scores = lookup.score_pairs([tests[q]] * len(head),
                                        [documents[column[d]] for d in head])
            reranked[q] = dict(zip(head, map(float, scores)))
        rows.append(row(f"BM25 top-{budget} >> CE", reranked, exact, collection.qrels,
                        float(budget)))

    from bench_common import cpu_summary  # noqa: E402  (tools/ helper)

    header = {"dataset": args.dataset, "split": args.split, "queries": len(tests),
              "docs": len(documents), "anchor_queries": len(anchors),
              "anchor_split": args.anchor_split, "scorer": f"{scorer.name} ({args.scorer}, "
              f"max_length {args.max_length})", "pairs_per_s": pairs_per_s, "cpu": cpu_summary(),
              "command": "python tools/anncur_study.py " + " ".join(sys.argv[1:] if argv is None
                                                                   else argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "anncur.json", json.dumps({**header, "rows": rows}, indent=2) + "\n")
    atomic_write_text(args.out / "anncur.md", markdown(rows, header))
    print(markdown(rows, header))
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        for name in ("anncur.json", "anncur.md"):
            shutil.copyfile(args.out / name, args.results / name)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
