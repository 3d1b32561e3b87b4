"""End-to-end evaluation: collection -> retriever -> run -> metrics -> files in a workdir.

Every run writes WORKDIR/metrics.json (`{"metrics": {...}, "dataset", "split", "model", ...}`,
metric keys being ir-measures names), WORKDIR/run.trec and WORKDIR/per_query.jsonl. WORKDIR and
the dataset may be local paths or URIs (gs://...: irjax/paths.py).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Mapping, Sequence

from irjax.data.collection import Collection
from irjax.data.resolve import open_collection
from irjax.evaluation.metrics import DEFAULT_MEASURES, evaluate_run, save_per_query
from irjax.evaluation.report import comparison_table
from irjax.retrieval.base import Retriever
from irjax.data.runs import write_trec_run
from irjax.files import atomic_write_text
from irjax.parallel.processes import is_logging_process
from irjax.paths import AnyPath, as_path

log = logging.getLogger(__name__)


def evaluate_on_collection(
    collection: Collection,
    retriever: Retriever,
    workdir: str | AnyPath,
    top_k: int = 100,
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> dict[str, Any]:
    """Retrieves for every judged query of the split, scores the run and writes the results.

    Every process takes part in retrieval (a retriever may split the work over them) and gets
    the same record back; only process 0 writes files."""
    workdir = as_path(workdir)
    queries = collection.eval_queries()
    log.info("%s on %s/%s: %d queries, %d documents", retriever.name, collection.name,
             collection.split, len(queries), len(collection.documents))
    start = time.perf_counter()
    run = retriever.retrieve(collection, queries, k=top_k)
    elapsed = time.perf_counter() - start
    result = evaluate_run(run, collection.qrels, measures=measures)
    writes = is_logging_process()
    if writes:
        write_trec_run(run, workdir / "run.trec", tag=retriever.name)
        save_per_query(result, workdir / "per_query.jsonl")
    record = {
        "metrics": {m: float(result.aggregate[m]) for m in measures},
        "dataset": collection.name,
        "split": collection.split,
        "model": retriever.name,
        "num_queries": len(queries),
        "num_documents": len(collection.documents),
        "top_k": top_k,
        "seconds": round(elapsed, 2),
        "timings": {k: round(v, 2) for k, v in getattr(retriever, "timings", {}).items()},
        "load_report": collection.report.counts,
    }
    # Retrievers that own an index report its size (bytes_per_doc, ...) beside the metrics.
    record.update(getattr(retriever, "index_stats", dict)())
    if writes:
        atomic_write_text(workdir / "metrics.json", json.dumps(record, indent=2) + "\n")
    log.info("%s", json.dumps(record["metrics"]))
    return record


def periodic_evaluation(collection: Collection, retriever_for: Callable[[Any], Retriever],
                        workdir: str | AnyPath) -> Callable[[Any, int], dict[str, float]]:
    """`(params, step) -> metrics` for a trainer's periodic evaluation: the retriever of those
    params through the same evaluation as every run, into WORKDIR/step_<step>/."""
    def evaluate(params: Any, step: int) -> dict[str, float]:
        record = evaluate_on_collection(collection, retriever_for(params),
                                        as_path(workdir) / f"step_{step}")
        return record["metrics"]

    return evaluate


def evaluate_retriever(
    dataset: str,
    split: str,
    workdir: str,
    retriever: Retriever,
    top_k: int = 100,
    data_dir: str | None = None,
    download: bool = False,
    streamed: bool = False,
    max_documents: int | None = None,
    max_queries: int | None = None,
) -> dict[str, Any]:
    """Evaluates one retriever on one collection split; the job of gin/eval/*.gin. `streamed`
    keeps the corpus on disk (for corpora larger than memory); `max_documents` (streamed only)
    evaluates on the corpus's first documents; `max_queries` on the first judged queries only
    (metrics.json's num_queries says how many)."""
    collection = open_collection(dataset, split, data_dir, download, streamed=streamed,
                                 max_documents=max_documents)
    if max_queries is not None:
        collection = collection.first_judged_queries(max_queries)
    record = evaluate_on_collection(collection, retriever, workdir, top_k)
    if is_logging_process():
        print(comparison_table([record]))
    return record


def compare_retrievers(
    dataset: str,
    split: str,
    workdir: str,
    retrievers: Mapping[str, Retriever],
    top_k: int = 100,
    data_dir: str | None = None,
    download: bool = False,
    streamed: bool = False,
) -> list[dict[str, Any]]:
    """Runs several retrievers on the same collection, each into WORKDIR/<name>/, and writes a
    side-by-side table to WORKDIR/comparison.md and WORKDIR/comparison.json."""
    collection = open_collection(dataset, split, data_dir, download, streamed=streamed)
    records = [evaluate_on_collection(collection, r, as_path(workdir) / name, top_k)
               for name, r in retrievers.items()]
    if is_logging_process():
        table = comparison_table(records)
        print(table)
        atomic_write_text(as_path(workdir) / "comparison.md", table + "\n")
        atomic_write_text(as_path(workdir) / "comparison.json", json.dumps(records, indent=2) + "\n")
    return records
