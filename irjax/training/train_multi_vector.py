"""The multi-vector (XTR / ColBERT) training job: the dual-encoder job's data and trainer with a
`MultiVectorModel` in place of the pooled encoder, evaluated by brute-force token retrieval.

Writes the same files as `train_dual_encoder`: WORKDIR/metrics.json (the fine-tuned model on the
eval split, scored by `MaxSimRetriever` in `eval_mode`), WORKDIR/comparison.md and
WORKDIR/training_summary.json. A multi-vector model has no meaningful zero-shot point (its
projection starts random), so the optional baseline is the pooled MiniLM dense retriever, written
to WORKDIR/zero_shot_dense/ for the comparison table.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

from irjax.data.collection import Collection
from irjax.data.hard_negatives import cached_hard_negatives
from irjax.data.pipeline import DualEncoderBatches
from irjax.data.teacher_scores import read_teacher_scores
from irjax.data.tokenization import WordPieceTokenizer
from irjax.data.training_examples import build_training_pairs
from irjax.evaluation.evaluate import evaluate_on_collection, open_collection
from irjax.evaluation.multi_vector_retriever import MaxSimRetriever, punctuation_ids
from irjax.evaluation.report import comparison_table
from irjax.evaluation.retrievers import DenseRetriever
from irjax.files import atomic_write_text
from irjax.index.embedding_cache import default_cache_dir
from irjax.models.bert import BertConfig
from irjax.models.dual_encoder import TextEncoder
from irjax.models.hf_import import load_bert_params
from irjax.models.multi_vector import MultiVectorModel
from irjax.models.pretrained import load_checkpoint
from irjax.training.optimizer import OptimizerConfig
from irjax.training.partitioning import create_mesh, is_logging_process
from irjax.training.train_dual_encoder import DataConfig
from irjax.training.trainer import Trainer

log = logging.getLogger(__name__)


def training_batches(train: Collection, tokenizer: WordPieceTokenizer,
                     data: DataConfig) -> DualEncoderBatches:
    """Pairs (+ BM25 hard negatives, teacher scores) as grain batches, as the dual encoder gets
    them. TAS-balanced sampling is not offered: it clusters with a pooled encoder."""
    if data.sampler != "random":
        raise ValueError(f"train_multi_vector supports sampler='random' only, got {data.sampler!r}")
    pairs = build_training_pairs(train)
    log.info("training pairs: %s", pairs.summary())
    hard_negatives = documents = None
    if data.num_hard_negatives:
        hard_negatives = cached_hard_negatives(train, default_cache_dir().parent / "hard_negatives",
                                               depth=data.hard_negative_depth,
                                               skip=data.hard_negative_skip)
        documents = {d.doc_id: d.contents for d in train.documents}
    teacher = read_teacher_scores(data.teacher_scores) if data.teacher_scores else None
    return DualEncoderBatches(
        pairs, tokenizer, data.global_batch_size, query_max_length=data.query_max_length,
        doc_max_length=data.doc_max_length, num_hard_negatives=data.num_hard_negatives,
        hard_negatives=hard_negatives, documents=documents, teacher=teacher,
        sampler=data.sampler, seed=data.seed)


def train_multi_vector(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    objective: str = "xtr",
    k_train: int = 256,
    dim: int = 128,
    temperature: float = 0.05,
    skip_punctuation: bool = True,
    num_epochs: float = 1.0,
    num_steps: int | None = None,
    data: DataConfig = DataConfig(),
    learning_rate: float = 3e-5,
    warmup_fraction: float = 0.1,
    decay: str = "linear",
    weight_decay: float = 0.01,
    clip_norm: float | None = 1.0,
    grad_accum_steps: int = 1,
    mesh_shape: tuple[int, int] = (-1, 1),
    checkpoint_every: int = 100,
    log_every: int = 10,
    eval_every: int | None = None,
    eval_mode: str = "xtr",
    k_prime: int = 1024,
    eval_doc_max_length: int | None = None,
    eval_batch_size: int = 32,
    evaluate_dense_baseline: bool = False,
    pretrained: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tunes MiniLM + a token projection with the XTR (or ColBERT) objective, then
    evaluates on `eval_split` with exhaustive token retrieval."""
    workdir_path = Path(workdir)
    checkpoint = load_checkpoint(pretrained)
    config = BertConfig.from_json(checkpoint.config_path)
    tokenizer = WordPieceTokenizer(checkpoint.directory)
    train = open_collection(dataset, train_split, data_dir)
    evaluation = open_collection(dataset, eval_split, data_dir)

    batches = training_batches(train, tokenizer, data)
    steps = num_steps or max(1, math.ceil(num_epochs * batches.steps_per_epoch))
    log.info("training for %d steps (%d per epoch, global batch %d)", steps,
             batches.steps_per_epoch, data.global_batch_size)

    skip_ids = punctuation_ids(tokenizer) if skip_punctuation else ()
    model = MultiVectorModel(config, dim=dim, objective=objective, k_train=k_train,
                             temperature=temperature, doc_skip_ids=skip_ids)
    optimizer = OptimizerConfig(learning_rate=learning_rate, num_steps=steps,
                                warmup_steps=int(warmup_fraction * steps), decay=decay,
                                weight_decay=weight_decay, clip_norm=clip_norm,
                                grad_accum_steps=grad_accum_steps)
    name = f"{checkpoint.name}-{objective}"

    def retriever_for(params: Any) -> MaxSimRetriever:
        return MaxSimRetriever(model, params, tokenizer,
                               doc_max_length=eval_doc_max_length or data.doc_max_length,
                               query_max_length=data.query_max_length, batch_size=eval_batch_size,
                               mode=eval_mode, k_prime=k_prime, doc_skip_ids=skip_ids,
                               name=f"{name}+{eval_mode}")

    def periodic_eval(params: Any, step: int) -> dict[str, float]:
        record = evaluate_on_collection(evaluation, retriever_for(params),
                                        workdir_path / "eval" / f"step_{step}")
        return record["metrics"]

    trainer = Trainer(
        model, workdir_path, steps, optimizer=optimizer, mesh=create_mesh(*mesh_shape), seed=seed,
        log_every=log_every, checkpoint_every=checkpoint_every,
        eval_every=eval_every, evaluate=periodic_eval if eval_every else None,
        import_params=lambda: model.from_pretrained_params(
            load_bert_params(checkpoint.weights_path, config)),
    )
    iterator = iter(batches)
    result = trainer.train(iterator, iterator.example_batch())

    records = []
    if evaluate_dense_baseline:
        dense = TextEncoder.from_pretrained(pretrained, max_length=eval_doc_max_length or 256)
        records.append(evaluate_on_collection(evaluation, DenseRetriever(dense, index="exact"),
                                              workdir_path / "zero_shot_dense"))
    records.append(evaluate_on_collection(evaluation, retriever_for(result.params), workdir_path))
    table = comparison_table(records)
    if is_logging_process():
        print(table)
        atomic_write_text(workdir_path / "comparison.md", table + "\n")
        atomic_write_text(workdir_path / "training_summary.json", json.dumps({
            "steps": result.step, "resumed_from": result.resumed_from,
            "final_train_metrics": {k: float(v) for k, v in (result.metrics or {}).items()},
            "model": {"objective": objective, "k_train": k_train, "dim": dim,
                      "temperature": temperature, "skip_punctuation": skip_punctuation},
            "eval": {"mode": eval_mode, "k_prime": k_prime},
            "data": dataclasses.asdict(data), "optimizer": dataclasses.asdict(optimizer),
        }, indent=2, default=str) + "\n")
    return records[-1]
