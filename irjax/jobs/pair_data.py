"""The training data of the pair-trained retrievers (dual encoder, XTR/ColBERT): the judged
pairs of a split and/or LM-generated pairs (`generated_queries`, written by the generate_queries
job), plus BM25 hard negatives, teacher scores and TAS clusters, as grain batches.

`train_dual_encoder` and `train_multi_vector` differ only in their model and their retriever;
their data comes from here.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from irjax.data.collection import Collection
from irjax.data.generated_queries import generated_training_pairs
from irjax.retrieval.hard_negatives import cached_hard_negatives
from irjax.choices import check_choice
from irjax.data.pipeline import SAMPLERS, DualEncoderBatches
from irjax.data.tas_sampler import cluster_queries
from irjax.data.teacher_scores import read_teacher_scores
from irjax.data.tokenization import WordPieceTokenizer
from irjax.data.training_examples import TrainingPairs, build_training_pairs
from irjax.errors import ConfigError
from irjax.index.embedding_cache import default_cache_dir

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
    # JSONL of generated (doc_id, query, kept) rows (generate_queries job): its kept rows are
    # added as pairs; `labelled_pairs=False` trains on them alone (no judged pair of the split).
    generated_queries: str | None = None
    labelled_pairs: bool = True

    def __post_init__(self) -> None:
        check_choice("DataConfig.sampler", self.sampler, SAMPLERS)
        if not self.labelled_pairs and not self.generated_queries:
            raise ConfigError("DataConfig.labelled_pairs=False leaves no training pairs: set "
                              "DataConfig.generated_queries to a generate_queries output file")


def collect_pairs(train: Collection, data: DataConfig) -> TrainingPairs:
    """The split's judged pairs (unless `labelled_pairs` is off), then the kept generated ones."""
    labelled = build_training_pairs(train) if data.labelled_pairs else TrainingPairs([], {}, 1)
    if not data.generated_queries:
        return labelled
    generated = generated_training_pairs(data.generated_queries,
                                         {d.doc_id: d.contents for d in train.documents})
    log.info("%d generated pairs from %s added to %d labelled ones", len(generated),
             data.generated_queries, len(labelled))
    return TrainingPairs([*labelled, *generated], labelled.counts, labelled.min_grade)


def training_batches(train: Collection, tokenizer: WordPieceTokenizer, data: DataConfig,
                     cluster_encoder: Any = None) -> DualEncoderBatches:
    """Pairs (+ BM25 hard negatives, teacher scores, TAS clusters) of `train` as grain batches.

    TAS-Balanced clusters the training queries with `cluster_encoder` (a pooled TextEncoder);
    without one, only the random sampler is available.
    """
    pairs = collect_pairs(train, data)
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
            raise ConfigError("sampler='tas_balanced' clusters queries with a pooled encoder, which "
                              "this job does not have; use sampler='random'")
        vectors = cluster_encoder.encode(pairs.query_ids, progress="encoding training queries for TAS")
        clusters = cluster_queries(pairs.query_ids, vectors, data.tas_clusters, data.seed,
                                   min_cluster_size=data.global_batch_size)
    return DualEncoderBatches(
        pairs, tokenizer, data.global_batch_size, query_max_length=data.query_max_length,
        doc_max_length=data.doc_max_length, num_hard_negatives=data.num_hard_negatives,
        hard_negatives=hard_negatives, documents=documents, teacher=teacher,
        sampler=data.sampler, query_clusters=clusters, seed=data.seed)
