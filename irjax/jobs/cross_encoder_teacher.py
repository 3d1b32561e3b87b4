"""A trained cross-encoder as a margin-MSE teacher: its scores of each training query's BM25
top `depth` and of the query's judged positives, as a teacher-scores file for train_dual_encoder
(`DataConfig.teacher_scores`).

WORKDIR/metrics.json is BM25>>CE@depth on the same split (how well the teacher ranks what it
scores, with its cost per query); WORKDIR/teacher_scores.tsv the scores. Positives that BM25 missed
are scored too, since the dual-encoder pipeline drops every pair whose positive has no teacher
score. `scale` multiplies every score: the student's margin-MSE compares cosine margins (at most 2),
so a cross-encoder's logits are brought to that scale, e.g. by the student's contrastive
temperature (0.05: a teacher margin of 1 logit is a cosine margin of 0.05, what the same margin
means to the student's contrastive softmax).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from irjax.data.resolve import open_collection
from irjax.data.runs import read_trec_run
from irjax.data.teacher_scores import write_teacher_scores
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.models.cross_encoder import CrossEncoderScorer
from irjax.parallel.processes import is_logging_process
from irjax.retrieval.bm25 import SparseRetriever
from irjax.retrieval.rerank import PairwiseReranker, RerankingRetriever

log = logging.getLogger(__name__)

TEACHER_FILE = "teacher_scores.tsv"


def cross_encoder_teacher(dataset: str, workdir: str, model_dir: str, split: str = "train",
                          depth: int = 10, scale: float = 1.0, batch_size: int = 32,
                          max_queries: int | None = None,
                          data_dir: str | None = None) -> dict[str, Any]:
    """Writes WORKDIR/teacher_scores.tsv and WORKDIR/metrics.json (module docstring)."""
    if scale <= 0:
        raise ValueError(f"scale={scale} must be > 0: a teacher's order must survive scaling")
    workdir_path = Path(workdir)
    collection = open_collection(dataset, split, data_dir)
    if max_queries is not None:
        collection = collection.first_judged_queries(max_queries)
    scorer = CrossEncoderScorer.load(model_dir, batch_size=batch_size)
    reranker = PairwiseReranker(scorer, batch_size=max(1024, batch_size))
    record = evaluate_on_collection(collection, RerankingRetriever(SparseRetriever(), reranker, depth),
                                    workdir_path, top_k=depth)
    run = read_trec_run(workdir_path / "run.trec")
    queries = collection.eval_queries()
    texts = {d.doc_id: d.contents for d in collection.documents}
    missing = [(qid, doc) for qid in queries for doc, grade in collection.qrels[qid].items()
               if grade > 0 and doc not in run.get(qid, {})]
    if missing:
        scores = scorer.score_pairs([queries[q] for q, _ in missing], [texts[d] for _, d in missing])
        for (qid, doc), score in zip(missing, scores.tolist()):
            run.setdefault(qid, {})[doc] = score
    log.info("teacher: %d scores for %d queries (%d positives outside BM25's top %d added)",
             sum(map(len, run.values())), len(run), len(missing), depth)
    if is_logging_process():
        write_teacher_scores({q: {d: s * scale for d, s in docs.items()} for q, docs in run.items()},
                             workdir_path / TEACHER_FILE)
    return record
