"""The dual-encoder training job: collection -> pairs (+ BM25 hard negatives, teacher, TAS) ->
grain batches -> Trainer -> fine-tuned encoder -> the same evaluation as zero-shot runs.

Writes WORKDIR/metrics.json exactly as gin/eval/*.gin runs do (the fine-tuned model on the eval
split), plus WORKDIR/zero_shot/metrics.json when `evaluate_zero_shot` is on, so one workdir shows
before and after; training curves go to WORKDIR/metrics.jsonl and TensorBoard events.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from irjax.data.tokenization import WordPieceTokenizer
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.data.resolve import open_collection
from irjax.retrieval.dense import DenseRetriever
from irjax.models.bert import BertConfig
from irjax.models.dual_encoder import TextEncoder
from irjax.models.dual_encoder_training import DualEncoderModel
from irjax.models.hf_import import load_bert_params
from irjax.models.pretrained import load_checkpoint
from irjax.training.checkpoints import fingerprint
from irjax.parallel.partitioning import create_mesh
from irjax.jobs.choices import check_job_choices
from irjax.jobs.retrieval_job import (DataConfig, count_steps, optimizer_config, training_batches,
                                      write_report)
from irjax.training.trainer import Trainer

log = logging.getLogger(__name__)


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
    check_job_choices("train_dual_encoder", objective=objective, negatives=negatives, decay=decay)
    workdir_path = Path(workdir)
    checkpoint = load_checkpoint(pretrained)
    config = BertConfig.from_json(checkpoint.config_path)
    tokenizer = WordPieceTokenizer(checkpoint.directory)
    train = open_collection(dataset, train_split, data_dir)
    evaluation = open_collection(dataset, eval_split, data_dir)

    zero_shot = TextEncoder.from_pretrained(pretrained, max_length=eval_max_length)
    batches = training_batches(train, tokenizer, data, cluster_encoder=zero_shot)
    steps = count_steps(batches, num_epochs, num_steps)

    mesh = create_mesh(*mesh_shape)
    model = DualEncoderModel(config, temperature=temperature, shared_towers=shared_towers,
                             objective=objective, negatives=negatives, pooling=checkpoint.pooling,
                             data_shards=mesh.shape["data"])
    optimizer = optimizer_config(steps, learning_rate, warmup_fraction, decay, weight_decay,
                                 clip_norm, grad_accum_steps)
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
    write_report(workdir_path, records, result, data, optimizer)
    return records[-1]
