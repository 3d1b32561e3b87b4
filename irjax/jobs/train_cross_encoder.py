"""The cross-encoder training job: judged pairs + BM25 hard negatives -> groups of 1+n pairs ->
Trainer (localized contrastive loss) -> a saved reranker -> first stage >> cross-encoder on the
evaluation split, next to the first stage alone.

Writes WORKDIR/metrics.json (the reranked run, with first-stage and rerank ms/query and the
reranker's FLOPs and model calls per query in its timings), WORKDIR/<first stage>/metrics.json
(the first stage alone on the same queries), WORKDIR/comparison.md, WORKDIR/cross_encoder/ (the
trained model; `CrossEncoderScorer.load` and gin/eval/cross_encoder_rerank.gin read it) and
training_summary.json; training curves go to WORKDIR/metrics.jsonl as for every trainer run.
"""
from __future__ import annotations

import logging
from typing import Any

import jax

from irjax.data.cross_encoder_batches import CrossEncoderBatches
from irjax.errors import ConfigError
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.index.embedding_cache import default_cache_dir
from irjax.jobs.bert_job_inputs import bert_job_inputs
from irjax.jobs.pair_data import DataConfig, collect_pairs
from irjax.jobs.summary import write_comparison, write_training_summary
from irjax.models.cross_encoder import CrossEncoderScorer
from irjax.models.cross_encoder_training import CrossEncoderModel
from irjax.models.efficiency import EncoderEfficiency
from irjax.models.hf_import import load_bert_params
from irjax.parallel.partitioning import create_mesh
from irjax.parallel.processes import is_logging_process
from irjax.retrieval.base import Retriever
from irjax.retrieval.bm25 import SparseRetriever
from irjax.retrieval.hard_negatives import cached_hard_negatives
from irjax.retrieval.rerank import PairwiseReranker, RerankingRetriever
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer import Trainer
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = OptimizerConfig(learning_rate=2e-5, warmup_fraction=0.1, decay="linear",
                                    weight_decay=0.01)
DEFAULT_DATA = DataConfig(global_batch_size=8, num_hard_negatives=7, hard_negative_skip=3)
MODEL_SUBDIR = "cross_encoder"


def train_cross_encoder(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    data: DataConfig = DEFAULT_DATA,
    max_length: int = 256,
    trainer: TrainerConfig = TrainerConfig(checkpoint_every=100, log_every=10),
    optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    first_stage: Retriever | None = None,
    rerank_depth: int = 100,
    eval_max_queries: int | None = None,
    eval_batch_size: int = 32,
    pretrained: str | None = None,
    data_dir: str | None = None,
    efficiency: EncoderEfficiency = EncoderEfficiency(),
) -> dict[str, Any]:
    """Trains a cross-encoder from a pretrained BERT (MiniLM by default) and evaluates
    `first_stage` (BM25 by default) >> it @`rerank_depth` on `eval_split`.

    `max_length` bounds a whole `[CLS] q [SEP] d [SEP]` pair; `data.query_max_length` the query's
    share; `data.doc_max_length` is unused. `eval_max_queries` evaluates on the split's first
    judged queries (both runs alike) where reranking the whole split is too slow."""
    if data.teacher_scores or data.sampler != "random":
        raise ConfigError("train_cross_encoder takes DataConfig.sampler='random' and no "
                          "teacher_scores (its loss is the localized contrastive one)")
    workdir_path, checkpoint, config, tokenizer, train, evaluation = bert_job_inputs(
        workdir, pretrained, dataset, train_split, eval_split, data_dir)
    if eval_max_queries is not None:
        evaluation = evaluation.first_judged_queries(eval_max_queries)

    pairs = collect_pairs(train, data)
    negatives = cached_hard_negatives(train, default_cache_dir().parent / "hard_negatives",
                                      depth=data.hard_negative_depth, skip=data.hard_negative_skip)
    batches = CrossEncoderBatches(
        pairs, tokenizer, data.global_batch_size, max_length=max_length,
        query_max_length=data.query_max_length, num_hard_negatives=data.num_hard_negatives,
        hard_negatives=negatives, documents={d.doc_id: d.contents for d in train.documents},
        seed=data.seed)
    trainer = trainer.resolved(batches.steps_per_epoch)
    model = CrossEncoderModel(config, efficiency=efficiency)
    loop = Trainer(model, workdir_path, trainer, optimizer, mesh=create_mesh(*trainer.mesh_shape),
                   import_params=lambda: model.from_pretrained_params(
                       load_bert_params(checkpoint.weights_path, config)))
    iterator = iter(batches)
    result = loop.train(iterator, iterator.example_batch())

    scorer = CrossEncoderScorer(model.module, jax.device_get(result.params), tokenizer,
                                name=f"{checkpoint.name}-cross-encoder", max_length=max_length,
                                query_max_length=data.query_max_length, batch_size=eval_batch_size)
    if is_logging_process():
        scorer.save(workdir_path / MODEL_SUBDIR)
    first = first_stage or SparseRetriever()
    records = [evaluate_on_collection(evaluation, first, workdir_path / first.name)]
    reranker = PairwiseReranker(scorer, batch_size=max(1024, eval_batch_size))
    records.append(evaluate_on_collection(
        evaluation, RerankingRetriever(first, reranker, rerank_depth), workdir_path))
    write_comparison(workdir_path, records)
    write_training_summary(loop, result, data=data, counts=batches.counts,
                           max_length=max_length, rerank_depth=rerank_depth,
                           eval_max_queries=eval_max_queries)
    return records[-1]
