"""What every retrieval training job shares: the training data from a collection split, the
optimizer settings, and the report written at the end (comparison table + training summary).

`train_dual_encoder` and `train_multi_vector` differ only in their model and their retriever;
everything on either side of the Trainer comes from here.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from irjax.data.collection import Collection
from irjax.retrieval.hard_negatives import cached_hard_negatives
from irjax.choices import check_choice
from irjax.data.pipeline import SAMPLERS, DualEncoderBatches
from irjax.data.tas_sampler import cluster_queries
from irjax.data.teacher_scores import read_teacher_scores
from irjax.data.tokenization import WordPieceTokenizer
from irjax.data.training_examples import build_training_pairs
from irjax.evaluation.report import comparison_table
from irjax.files import atomic_write_text
from irjax.index.embedding_cache import default_cache_dir
from irjax.training.optimizer import OptimizerConfig
from irjax.parallel.processes import is_logging_process
from irjax.training.trainer import TrainResult

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What the grain pipeline draws from the training split."""

    global_batch_size: int = 32
    query_max_length: int = 64
    doc_max_length: int = 256
    num_hard_negatives: int = 0
    hard_negative_depth: int = 100
    hard_negative_skip: int = 0
    teacher_scores: str | None = None
    sampler: str = "random"
    tas_clusters: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("DataConfig.sampler", self.sampler, SAMPLERS)


def training_batches(train: Collection, tokenizer: WordPieceTokenizer, data: DataConfig,
                     cluster_encoder: Any = None) -> DualEncoderBatches:
    """Pairs (+ BM25 hard negatives, teacher scores, TAS clusters) of `train` as grain batches.

    TAS-Balanced clusters the training queries with `cluster_encoder` (a pooled TextEncoder);
    without one, only the random sampler is available.
    """
    pairs = build_training_pairs(train)
    log.info("training pairs: %s", pairs.summary())
    hard_negatives = documents = None
    if data.num_hard_negatives:
        hard_negatives = cached_hard_negatives(train, default_cache_dir().parent / "hard_negatives",
                                               depth=data.hard_negative_depth,
                                               skip=data.hard_negative_skip)
        documents = {d.doc_id: d.contents for d in train.documents}
    teacher = read_teacher_scores(data.teacher_scores) if data.teacher_scores else None
    clusters = None
    if data.sampler == "tas_balanced":
        if cluster_encoder is None:
            raise ValueError("sampler='tas_balanced' clusters queries with a pooled encoder, which "
                             "this job does not have; use sampler='random'")
        vectors = cluster_encoder.encode(pairs.query_ids, progress="encoding training queries for TAS")
        clusters = cluster_queries(pairs.query_ids, vectors, data.tas_clusters, data.seed,
                                   min_cluster_size=data.global_batch_size)
    return DualEncoderBatches(
        pairs, tokenizer, data.global_batch_size, query_max_length=data.query_max_length,
        doc_max_length=data.doc_max_length, num_hard_negatives=data.num_hard_negatives,
        hard_negatives=hard_negatives, documents=documents, teacher=teacher,
        sampler=data.sampler, query_clusters=clusters, seed=data.seed)


def count_steps(batches: DualEncoderBatches, num_epochs: float, num_steps: int | None) -> int:
    steps = num_steps or max(1, math.ceil(num_epochs * batches.steps_per_epoch))
    log.info("training for %d steps (%d per epoch, global batch %d)", steps,
             batches.steps_per_epoch, batches.global_batch_size)
    return steps


def optimizer_config(steps: int, learning_rate: float, warmup_fraction: float, decay: str,
                     weight_decay: float, clip_norm: float | None,
                     grad_accum_steps: int) -> OptimizerConfig:
    return OptimizerConfig(learning_rate=learning_rate, num_steps=steps,
                           warmup_steps=int(warmup_fraction * steps), decay=decay,
                           weight_decay=weight_decay, clip_norm=clip_norm,
                           grad_accum_steps=grad_accum_steps)


def write_report(workdir: Path, records: Sequence[dict[str, Any]], result: TrainResult,
                 data: DataConfig, optimizer: OptimizerConfig, **settings: Any) -> None:
    """Prints the comparison table; writes comparison.md and training_summary.json (process 0)."""
    if not is_logging_process():
        return
    table = comparison_table(records)
    print(table)
    atomic_write_text(workdir / "comparison.md", table + "\n")
    atomic_write_text(workdir / "training_summary.json", json.dumps({
        "steps": result.step, "resumed_from": result.resumed_from,
        "final_train_metrics": {k: float(v) for k, v in (result.metrics or {}).items()},
        **settings, "data": dataclasses.asdict(data), "optimizer": dataclasses.asdict(optimizer),
    }, indent=2, default=str) + "\n")
