"""The dual-encoder training job: collection -> pairs (+ BM25 hard negatives, teacher, TAS) ->
grain batches -> Trainer -> fine-tuned encoder -> the same evaluation as zero-shot runs.

Writes WORKDIR/metrics.json exactly as gin/eval/*.gin runs do (the fine-tuned model on the eval
split), plus WORKDIR/zero_shot/metrics.json when `evaluate_zero_shot` is on, so one workdir shows
before and after; training curves go to WORKDIR/metrics.jsonl and TensorBoard events.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from irjax.data.hard_negatives import cached_hard_negatives
from irjax.data.tas_sampler import cluster_queries
from irjax.data.teacher_scores import read_teacher_scores
from irjax.data.tokenization import WordPieceTokenizer
from irjax.data.training_examples import build_training_pairs
from irjax.data.pipeline import DualEncoderBatches
from irjax.evaluation.evaluate import evaluate_on_collection, open_collection
from irjax.evaluation.report import comparison_table
from irjax.evaluation.retrievers import DenseRetriever
from irjax.files import atomic_write_text
from irjax.index.embedding_cache import default_cache_dir
from irjax.models.bert import BertConfig
from irjax.models.dual_encoder import TextEncoder
from irjax.models.dual_encoder_training import DualEncoderModel
from irjax.models.hf_import import load_bert_params
from irjax.models.pretrained import load_checkpoint
from irjax.training.checkpoints import fingerprint
from irjax.training.optimizer import OptimizerConfig
from irjax.training.partitioning import create_mesh, is_logging_process
from irjax.training.trainer import Trainer

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


def _encoder_for(model: DualEncoderModel, side_params: Any, tokenizer: WordPieceTokenizer,
                 name: str, max_length: int) -> TextEncoder:
    """A TextEncoder over trained tower params, fingerprinted by their values (embedding cache key)."""
    return TextEncoder(model.module, side_params, tokenizer, name=name, max_length=max_length,
                       pooling=model.pooling, fingerprint_parts=(f"params:{_params_digest(side_params)}",))


def _params_digest(params: Any) -> str:
    return hashlib.sha256(json.dumps(fingerprint(params)).encode()).hexdigest()


def train_dual_encoder(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    num_epochs: float = 1.0,
    num_steps: int | None = None,
    data: DataConfig = DataConfig(),
    learning_rate: float = 2e-5,
    warmup_fraction: float = 0.1,
    decay: str = "linear",
    weight_decay: float = 0.01,
    clip_norm: float | None = 1.0,
    grad_accum_steps: int = 1,
    temperature: float = 0.05,
    shared_towers: bool = True,
    objective: str = "contrastive",
    negatives: str = "global",
    mesh_shape: tuple[int, int] = (-1, 1),
    checkpoint_every: int = 100,
    log_every: int = 10,
    eval_every: int | None = None,
    eval_max_length: int = 256,
    evaluate_zero_shot: bool = True,
    pretrained: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tunes a pretrained encoder (MiniLM by default) and evaluates it on `eval_split`."""
    workdir_path = Path(workdir)
    checkpoint = load_checkpoint(pretrained)
    config = BertConfig.from_json(checkpoint.config_path)
    tokenizer = WordPieceTokenizer(checkpoint.directory)
    train = open_collection(dataset, train_split, data_dir)
    evaluation = open_collection(dataset, eval_split, data_dir)

    pairs = build_training_pairs(train)
    log.info("training pairs: %s", pairs.summary())
    documents = {d.doc_id: d.contents for d in train.documents}
    hard_negatives = None
    if data.num_hard_negatives:
        hard_negatives = cached_hard_negatives(train, default_cache_dir().parent / "hard_negatives",
                                               depth=data.hard_negative_depth, skip=data.hard_negative_skip)
    teacher = read_teacher_scores(data.teacher_scores) if data.teacher_scores else None
    zero_shot = TextEncoder.from_pretrained(pretrained, max_length=eval_max_length)
    clusters = None
    if data.sampler == "tas_balanced":
        vectors = zero_shot.encode(pairs.query_ids, progress="encoding training queries for TAS")
        clusters = cluster_queries(pairs.query_ids, vectors, data.tas_clusters, data.seed,
                                   min_cluster_size=data.global_batch_size)
    batches = DualEncoderBatches(
        pairs, tokenizer, data.global_batch_size, query_max_length=data.query_max_length,
        doc_max_length=data.doc_max_length, num_hard_negatives=data.num_hard_negatives,
        hard_negatives=hard_negatives, documents=documents if data.num_hard_negatives else None,
        teacher=teacher, sampler=data.sampler, query_clusters=clusters, seed=data.seed)
    steps = num_steps or max(1, math.ceil(num_epochs * batches.steps_per_epoch))
    log.info("training for %d steps (%d per epoch, global batch %d)", steps, batches.steps_per_epoch,
             data.global_batch_size)

    mesh = create_mesh(*mesh_shape)
    model = DualEncoderModel(config, temperature=temperature, shared_towers=shared_towers,
                             objective=objective, negatives=negatives, pooling=checkpoint.pooling,
                             data_shards=mesh.shape["data"])
    optimizer = OptimizerConfig(learning_rate=learning_rate, num_steps=steps,
                                warmup_steps=int(warmup_fraction * steps), decay=decay,
                                weight_decay=weight_decay, clip_norm=clip_norm,
                                grad_accum_steps=grad_accum_steps)
    name = f"{checkpoint.name}-finetuned"

    def retriever_for(params: Any) -> DenseRetriever:
        query = _encoder_for(model, model.tower(params, "query"), tokenizer, name, eval_max_length)
        doc = query if shared_towers else _encoder_for(model, model.tower(params, "doc"), tokenizer,
                                                       name, eval_max_length)
        return DenseRetriever(doc, index="exact", query_encoder=query,
                              cache_dir=str(workdir_path / "embedding_cache"))

    def periodic_eval(params: Any, step: int) -> dict[str, float]:
        """The eval split through the same evaluation stack, every `eval_every` steps."""
        record = evaluate_on_collection(evaluation, retriever_for(params),
                                        workdir_path / "eval" / f"step_{step}")
        return record["metrics"]

    trainer = Trainer(
        model, workdir_path, steps, optimizer=optimizer, mesh=mesh, seed=seed,
        log_every=log_every, checkpoint_every=checkpoint_every,
        eval_every=eval_every, evaluate=periodic_eval if eval_every else None,
        import_params=lambda: model.from_pretrained_params(load_bert_params(checkpoint.weights_path, config)),
    )
    iterator = iter(batches)
    result = trainer.train(iterator, iterator.example_batch())

    records = []
    if evaluate_zero_shot:
        records.append(evaluate_on_collection(evaluation, DenseRetriever(zero_shot, index="exact"),
                                              workdir_path / "zero_shot"))
    records.append(evaluate_on_collection(evaluation, retriever_for(result.params), workdir_path))
    table = comparison_table(records)
    if is_logging_process():
        print(table)
        atomic_write_text(workdir_path / "comparison.md", table + "\n")
        atomic_write_text(workdir_path / "training_summary.json", json.dumps({
            "steps": result.step, "resumed_from": result.resumed_from,
            "final_train_metrics": {k: float(v) for k, v in (result.metrics or {}).items()},
            "data": dataclasses.asdict(data), "optimizer": dataclasses.asdict(optimizer),
        }, indent=2, default=str) + "\n")
    return records[-1]
