"""Scores a run against qrels with ir-measures; no metric is computed by hand here.

Two choices make the numbers comparable with BEIR / trec_eval reporting:

* Every judged query counts. A query that has judgments but no documents in the run scores 0 on
  every measure and is part of every mean. ir-measures 0.4.3 already does this (its
  `Evaluator.iter_calc` yields the measure's default, 0, for each qrels query the providers did not
  score), whereas calling pytrec_eval directly, as BEIR's code does, averages only over the queries
  present in the run. We check the guarantee on every call rather than trusting it silently.
  Judged queries are those with at least one judgment (relevant or not); run queries without
  judgments are ignored and only counted.
* One ranking for all measures. ir-measures sends nDCG/R to pytrec_eval (ties: descending doc id)
  but RR@k to its MS MARCO code (ties: ascending doc id), so a tie could rank a document differently
  per measure. We first replace scores by strictly decreasing values in trec_eval order
  (`runs.rank_documents`), which changes no ranking trec_eval would produce and removes all ties.
"""
from __future__ import annotations

import dataclasses
import json
import operator
import os
from typing import Any, Mapping, Sequence

import ir_measures

from irjax.data.runs import Qrels, Run, rank_documents
from irjax.data.text import text_problem
from irjax.files import atomic_write_text
from irjax.paths import AnyPath, as_path

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "R@10", "R@100", "RR@10")


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Aggregate and per-query scores, keyed by the measure names exactly as requested."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    measures: tuple[str, ...]
    num_judged: int  # queries with at least one judgment: the denominator of every mean
    num_with_results: int  # judged queries for which the run has at least one document
    num_unjudged_ignored: int  # run queries without judgments, left out of every number

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (aggregate and counts, no per-query detail)."""
        return {
            "metrics": dict(self.aggregate),
            "num_judged": self.num_judged,
            "num_with_results": self.num_with_results,
            "num_unjudged_ignored": self.num_unjudged_ignored,
        }


def parse_measures(names: Sequence[str]) -> list[tuple[str, Any]]:
    """(name, ir-measures Measure) pairs; unknown or duplicate measures fail before any scoring."""
    if isinstance(names, str):
        names = (names,)
    if not names:
        raise ValueError("no measures requested")
    parsed: list[tuple[str, Any]] = []
    seen: dict[Any, str] = {}
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except Exception as e:  # ir-measures raises several types for malformed names
            raise ValueError(f"{name!r} is not an ir-measures measure name (e.g. 'nDCG@10', 'RR@10'): {e}") from e
        if measure in seen:
            raise ValueError(f"measures {seen[measure]!r} and {name!r} are the same measure ({measure})")
        seen[measure] = name
        parsed.append((name, measure))
    return parsed


def _judged_qrels(qrels: Mapping[str, Mapping[str, int]]) -> Qrels:
    """Drops queries with no judgments and checks that every relevance label is an integer."""
    judged: Qrels = {}
    for qid, docs in qrels.items():
        if not docs:
            continue
        labels: dict[str, int] = {}
        for doc_id, relevance in docs.items():
            for value in (qid, doc_id):
                if isinstance(value, str) and (problem := text_problem(value)) is not None:
                    raise ValueError(f"qrels: query {qid!r}, document {doc_id!r}: {problem}")
            if isinstance(relevance, bool):
                raise ValueError(f"qrels: query {qid!r}, document {doc_id!r}: relevance {relevance!r} is a bool")
            try:
                labels[doc_id] = operator.index(relevance)
            except TypeError:
                raise ValueError(f"qrels: query {qid!r}, document {doc_id!r}: relevance {relevance!r} "
                                 "is not an integer") from None
        judged[str(qid)] = labels
    if not judged:
        raise ValueError("qrels contain no judged queries; nothing to evaluate")
    return judged


def _tie_free(run: Mapping[str, Mapping[str, float]], qids: set[str]) -> Run:
    """The judged queries' rankings with scores n, n-1, ..., 1 in trec_eval order (see module doc).

    Queries come in sorted order, not in the order of a set: ir-measures sums per-query values
    in the order it receives them, and a set's order follows PYTHONHASHSEED, which changed the
    last digits of every mean from one process to the next."""
    canonical: Run = {}
    for qid in sorted(qids.intersection(run)):
        ranked = rank_documents(run[qid])
        for doc_id, _ in ranked:
            if (problem := text_problem(doc_id)) is not None:  # pytrec_eval would crash on it
                raise ValueError(f"run: query {qid!r}, document {doc_id!r}: {problem}")
        canonical[qid] = {doc_id: float(len(ranked) - i) for i, (doc_id, _) in enumerate(ranked)}
    return canonical


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> EvalResult:
    """Scores `run` on every judged query of `qrels`; missing queries score 0 (see module doc)."""
    parsed = parse_measures(measures)
    judged = _judged_qrels(qrels)
    judged_ids = set(judged)
    run_ids = {str(qid) for qid in run}
    canonical = _tie_free({str(q): docs for q, docs in run.items()}, judged_ids)

    evaluator = ir_measures.evaluator([m for _, m in parsed], judged)
    aggregate_by_measure, metrics = evaluator.calc(canonical)
    name_of = {measure: name for name, measure in parsed}

    per_query: dict[str, dict[str, float]] = {}
    for metric in metrics:
        per_query.setdefault(metric.query_id, {})[name_of[metric.measure]] = float(metric.value)
    names = [name for name, _ in parsed]
    incomplete = [q for q in judged_ids if set(per_query.get(q, ())) != set(names)]
    if set(per_query) != judged_ids or incomplete:
        raise RuntimeError("ir-measures did not score every judged query on every measure "
                           f"(e.g. {sorted(set(incomplete) | (judged_ids ^ set(per_query)))[:5]}); "
                           "means would not cover all judged queries")

    return EvalResult(
        aggregate={name: float(aggregate_by_measure[measure]) for name, measure in parsed},
        per_query={qid: {name: per_query[qid][name] for name in names} for qid in sorted(per_query)},
        measures=tuple(names),
        num_judged=len(judged_ids),
        num_with_results=sum(1 for qid in canonical if canonical[qid]),
        num_unjudged_ignored=len(run_ids - judged_ids),
    )


def save_per_query(result: EvalResult, path: str | os.PathLike) -> AnyPath:
    """Writes per-query scores atomically, one query per line, sorted by query id.

    `.jsonl` gives `{"query_id": ..., "<measure>": value, ...}` objects; `.tsv` gives a table whose
    header is `query_id` followed by the measure names. Values keep full float precision.
    """
    path = as_path(path)
    rows = sorted(result.per_query.items())
    if path.suffix == ".jsonl":
        text = "".join(json.dumps({"query_id": qid, **scores}) + "\n" for qid, scores in rows)
    elif path.suffix == ".tsv":
        for qid, _ in rows:
            if "\t" in qid or "\n" in qid:
                raise ValueError(f"query id {qid!r} cannot be written to a TSV file")
        header = "\t".join(("query_id", *result.measures)) + "\n"
        text = header + "".join(
            "\t".join((qid, *(repr(scores[m]) for m in result.measures))) + "\n" for qid, scores in rows
        )
    else:
        raise ValueError(f"{path}: per-query scores are written as .jsonl or .tsv, not {path.suffix!r}")
    return atomic_write_text(path, text)


def load_per_query(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Reads back a `.jsonl` file written by `save_per_query` (e.g. for significance tests)."""
    path = as_path(path)
    per_query: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid = row.pop("query_id")
                scores = {name: float(value) for name, value in row.items()}
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: not a per-query score line ({e}): {line.rstrip()!r}") from None
            if qid in per_query:
                raise ValueError(f"{path}:{lineno}: duplicate query id {qid!r}")
            per_query[str(qid)] = scores
    return per_query
