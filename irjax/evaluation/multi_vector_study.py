"""Every multi-vector inference path of one trained model, on one encoding, in one report.

For a `MaxSimRetriever` (a trained XTR or ColBERT token encoder) and a collection this runs:

- `maxsim`: exhaustive ColBERT MaxSim over the whole corpus (the quality ceiling, and the
  "truth" for candidate recall below);
- `xtr_bruteforce` (optional, slow): XTR with exact brute-force token retrieval on device;
- `xtr_<kind>`: XTR through a `TokenIndex` (ScaNN by default): top-k' tokens per query token,
  scoring with missing-similarity imputation;
- `xtr_<kind>_maxsim`: exhaustive MaxSim over exactly the candidates `xtr_<kind>` scored;
- `muvera_<N>`: FDE single-vector search, exact MaxSim rerank of the top N.

It writes each path's metrics/run like any other evaluation (under `workdir/<path>/`), plus
`study.json` and `study.md` with:

- cost: XTR scoring against MaxSim over the same candidates, FLOPs and seconds from one run;
- candidates: how many candidates each first stage needs to recall the exhaustive-MaxSim top
  `truth_depth` documents: MUVERA's FDE ranking vs XTR's token-retrieval candidates (ranked by
  their XTR score, and, as in the MUVERA paper's single-vector heuristic, the unordered union
  of the documents of each query token's top-k' tokens for several k').
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from irjax.data.collection import Collection
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.retrieval.multi_vector import MaxSimRetriever
from irjax.evaluation.report import comparison_table
from irjax.data.runs import read_trec_run
from irjax.retrieval.token_retrievers import MuveraRetriever, XtrIndexRetriever
from irjax.files import atomic_write_text
from irjax.index.fde import FDEConfig
from irjax.index.xtr_scoring import xtr_score_candidates

CANDIDATE_COUNTS = (10, 20, 50, 100, 200, 500, 1000)
RECALL_TARGETS = (0.8, 0.9, 0.95)
UNION_K_PRIMES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _truth(run: dict[str, dict[str, float]], depth: int) -> dict[str, set[str]]:
    return {q: {d for d, _ in sorted(docs.items(), key=lambda x: -x[1])[:depth]}
            for q, docs in run.items()}


def _recall(found: Sequence[str], truth: set[str]) -> float:
    return len(truth.intersection(found)) / len(truth) if truth else float("nan")


def candidates_needed(curve: Sequence[dict[str, float]], target: float) -> float | None:
    """Smallest mean candidate count in `curve` (rows of candidates/recall) reaching `target`."""
    hits = [row["candidates"] for row in curve if row["recall"] >= target]
    return min(hits) if hits else None


def _mean(values: list[float]) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def candidate_curves(collection: Collection, queries: dict[str, str], truth: dict[str, set[str]],
                     xtr: XtrIndexRetriever, muvera: MuveraRetriever,
                     counts: Sequence[int] = CANDIDATE_COUNTS,
                     union_k_primes: Sequence[int] = UNION_K_PRIMES) -> dict[str, Any]:
    """Recall of the truth sets against the number of candidates, for each first stage."""
    doc_ids = collection.doc_ids
    index_ids = xtr.token_index(collection).doc_ids
    _, fde_ranked = muvera.candidates(collection, queries, max(counts))
    search = xtr.search(collection, queries)
    qids = list(queries)
    xtr_ranked: list[list[str]] = []
    union_rows: dict[int, list[tuple[int, float]]] = {k: [] for k in union_k_primes}
    for qid, sims, hits in zip(qids, search.scores, search.docs):
        if len(sims) == 0:
            xtr_ranked.append([])
            continue
        cand, scores = xtr_score_candidates(sims, hits)
        xtr_ranked.append([index_ids[c] for c in cand[np.argsort(-scores, kind="stable")]])
        for k in union_k_primes:
            if k <= sims.shape[1]:
                union = {index_ids[c] for c in np.unique(hits[:, :k]) if c >= 0}
                union_rows[k].append((len(union), _recall(list(union), truth.get(qid, set()))))
    fde_curve, xtr_curve = [], []
    for n in counts:
        fde_curve.append({"candidates": n, "recall": _mean(
            [_recall([doc_ids[int(d)] for d in ranked[:n]], truth.get(q, set()))
             for q, ranked in zip(qids, fde_ranked)])})
        xtr_curve.append({"candidates": n, "recall": _mean(
            [_recall(ranked[:n], truth.get(q, set())) for q, ranked in zip(qids, xtr_ranked)])})
    union_curve = [{"k_prime": k, "candidates": _mean([float(c) for c, _ in rows]),
                    "recall": _mean([r for _, r in rows])}
                   for k, rows in union_rows.items() if rows]
    needed = {
        f"recall>={t}": {"muvera_fde": candidates_needed(fde_curve, t),
                         "xtr_ranked": candidates_needed(xtr_curve, t),
                         "token_union": candidates_needed(union_curve, t)}
        for t in RECALL_TARGETS}
    return {"muvera_fde": fde_curve, "xtr_ranked": xtr_curve, "token_union": union_curve,
            "candidates_needed": needed}


def study_multi_vector(collection: Collection, base: MaxSimRetriever, workdir: str | Path,
                       k_prime: int = 1024, token_index_kind: str = "scann",
                       token_index_options: dict[str, Any] | None = None,
                       muvera_candidates: Sequence[int] = (100, 1000),
                       fde: FDEConfig | None = None, include_xtr_exact: bool = False,
                       truth_depth: int = 10, top_k: int = 100) -> dict[str, Any]:
    """Runs every path (see the module docstring) and writes study.json / study.md."""
    workdir = Path(workdir)
    name = base.name.split("+")[0]
    records: dict[str, dict[str, Any]] = {}

    exhaustive = copy.copy(base)
    exhaustive.mode, exhaustive.name = "maxsim", f"{name}+maxsim"
    exhaustive.timings = {}
    records["maxsim"] = evaluate_on_collection(collection, exhaustive, workdir / "maxsim", top_k)
    if include_xtr_exact:
        exact = copy.copy(base)
        exact.mode, exact.k_prime, exact.name = "xtr", k_prime, f"{name}+xtr-bruteforce"
        exact.timings = {}
        records["xtr_bruteforce"] = evaluate_on_collection(collection, exact, workdir / "xtr_bruteforce",
                                                      top_k)
    xtr = XtrIndexRetriever(base, k_prime=k_prime, index_kind=token_index_kind, scoring="xtr",
                            index_options=token_index_options,
                            name=f"{name}+xtr-{token_index_kind}")
    key = f"xtr_{token_index_kind}"
    records[key] = evaluate_on_collection(collection, xtr, workdir / key, top_k)
    reference = xtr.scored_by("maxsim", name=f"{name}+xtr-{token_index_kind}-candidates+maxsim")
    records[f"{key}_maxsim"] = evaluate_on_collection(collection, reference,
                                                      workdir / f"{key}_maxsim", top_k)
    muvera = None
    for n in muvera_candidates:
        muvera = MuveraRetriever(base, fde=fde if muvera is None else muvera.fde,
                                 num_candidates=n, name=f"{name}+muvera-{n}")
        records[f"muvera_{n}"] = evaluate_on_collection(collection, muvera,
                                                        workdir / f"muvera_{n}", top_k)

    truth = _truth(read_trec_run(workdir / "maxsim" / "run.trec"), truth_depth)
    queries = collection.eval_queries()
    curves = candidate_curves(collection, queries, truth, xtr,
                              muvera or MuveraRetriever(base, fde=fde))
    ndcg = "nDCG@10"
    cost = {
        "xtr": xtr.cost, "maxsim_over_same_candidates": reference.cost,
        "flops_ratio": reference.cost["scoring_flops"] / max(xtr.cost["scoring_flops"], 1.0),
        "time_ratio": reference.cost["scoring_seconds"] / max(xtr.cost["scoring_seconds"], 1e-9),
        "median_time_ratio": (reference.cost["scoring_ms_median"]
                              / max(xtr.cost["scoring_ms_median"], 1e-9)),
        "ndcg10_xtr": records[key]["metrics"].get(ndcg),
        "ndcg10_maxsim_same_candidates": records[f"{key}_maxsim"]["metrics"].get(ndcg),
    }
    token_index = xtr.token_index(collection)
    study = {"dataset": collection.name, "split": collection.split, "model": name,
             "paths": {k: r["metrics"] for k, r in records.items()},
             "cost": cost, "candidates": {"truth": f"exhaustive MaxSim top-{truth_depth}",
                                          **curves},
             "token_index": {**token_index.stats.__dict__, "kind": token_index.kind,
                             "options": token_index.index_options,
                             "build_seconds": xtr.timings.get("build_token_index_s")},
             "fde": {**(muvera.fde.__dict__ if muvera else {}),
                     "output_dim": muvera.fde.output_dim if muvera else None}}
    atomic_write_text(workdir / "study.json", json.dumps(study, indent=2) + "\n")
    atomic_write_text(workdir / "study.md", _markdown(study, list(records.values())))
    return study


def _markdown(study: dict[str, Any], records: list[dict[str, Any]]) -> str:
    cost = study["cost"]
    lines = [f"# Multi-vector inference paths: {study['model']} on "
             f"{study['dataset']}/{study['split']}", "", comparison_table(records), "",
             "## XTR scoring vs MaxSim over the same candidates", "",
             f"- candidates per query: {cost['xtr']['candidates_per_query']:.0f} "
             f"(k' = {cost['xtr']['k_prime']})",
             f"- FLOPs per query: XTR {cost['xtr']['scoring_flops_per_query']:.3g}, MaxSim "
             f"{cost['maxsim_over_same_candidates']['scoring_flops_per_query']:.3g} "
             f"-> **{cost['flops_ratio']:.0f}x** fewer",
             f"- scoring time per query (median): XTR {cost['xtr']['scoring_ms_median']:.2f} ms, "
             f"MaxSim {cost['maxsim_over_same_candidates']['scoring_ms_median']:.2f} ms -> "
             f"**{cost['median_time_ratio']:.1f}x** faster (means: "
             f"{cost['xtr']['scoring_ms_per_query']:.2f} vs "
             f"{cost['maxsim_over_same_candidates']['scoring_ms_per_query']:.2f} ms)",
             f"- nDCG@10: XTR {cost['ndcg10_xtr']:.4f}, MaxSim over the same candidates "
             f"{cost['ndcg10_maxsim_same_candidates']:.4f}", "",
             f"## Candidates needed to recall the {study['candidates']['truth']}", "",
             "| recall | MUVERA FDE | XTR-ranked token candidates | token union (MUVERA's SV "
             "heuristic) |", "|---|---|---|---|"]
    for target, row in study["candidates"]["candidates_needed"].items():
        cells = [("-" if v is None else f"{v:.0f}") for v in row.values()]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
