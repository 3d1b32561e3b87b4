"""The dual-encoder training job: collection -> pairs (+ BM25 hard negatives, teacher, TAS) ->
grain batches -> Trainer -> fine-tuned encoder -> the same evaluation as zero-shot runs.

Writes WORKDIR/metrics.json exactly as gin/eval/*.gin runs do (the fine-tuned model on the eval
split), plus WORKDIR/zero_shot/metrics.json when `evaluate_zero_shot` is on, so one workdir shows
before and after; training curves go to WORKDIR/metrics.jsonl and TensorBoard events.
"""
from __future__ import annotations

import logging
from typing import Any

from irjax.evaluation.evaluate import evaluate_on_collection, periodic_evaluation
from irjax.jobs.bert_job_inputs import bert_job_inputs
from irjax.jobs.pair_data import DataConfig, training_batches
from irjax.jobs.summary import write_comparison, write_training_summary
from irjax.models.dual_encoder import TextEncoder
from irjax.models.dual_encoder_training import DualEncoderModel
from irjax.models.efficiency import EncoderEfficiency
from irjax.models.hf_import import load_bert_params
from irjax.parallel.partitioning import create_mesh
from irjax.jobs.choices import check_job_choices
from irjax.retrieval.dense import DenseRetriever, dual_encoder_retriever
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer import Trainer
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = OptimizerConfig(learning_rate=2e-5, warmup_fraction=0.1, decay="linear",
                                    weight_decay=0.01)


def train_dual_encoder(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    data: DataConfig = DataConfig(),
    trainer: TrainerConfig = TrainerConfig(checkpoint_every=100, log_every=10),
    optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    temperature: float = 0.05,
    shared_towers: bool = True,
    objective: str = "contrastive",
    negatives: str = "global",
    eval_max_length: int = 256,
    evaluate_zero_shot: bool = True,
    pretrained: str | None = None,
    data_dir: str | None = None,
    efficiency: EncoderEfficiency = EncoderEfficiency(),
) -> dict[str, Any]:
    """Fine-tunes a pretrained encoder (MiniLM by default) and evaluates it on `eval_split`.

    `efficiency`: attention path, per-layer remat and GradCache (irjax/models/efficiency.py);
    they change speed and memory, not the model."""
    check_job_choices("train_dual_encoder", objective=objective, negatives=negatives)
    workdir_path, checkpoint, config, tokenizer, train, evaluation = bert_job_inputs(
        workdir, pretrained, dataset, train_split, eval_split, data_dir)

    zero_shot = TextEncoder.from_pretrained(pretrained, max_length=eval_max_length)
    batches = training_batches(train, tokenizer, data, cluster_encoder=zero_shot)
    trainer = trainer.resolved(batches.steps_per_epoch)

    mesh = create_mesh(*trainer.mesh_shape)
    model = DualEncoderModel(config, temperature=temperature, shared_towers=shared_towers,
                             objective=objective, negatives=negatives, pooling=checkpoint.pooling,
                             data_shards=mesh.shape["data"], efficiency=efficiency)
    name = f"{checkpoint.name}-finetuned"

    def retriever_for(params: Any) -> DenseRetriever:
        return dual_encoder_retriever(model, params, tokenizer, name, eval_max_length,
                                      cache_dir=str(workdir_path / "embedding_cache"))

    loop = Trainer(
        model, workdir_path, trainer, optimizer, mesh=mesh,
        evaluate=periodic_evaluation(evaluation, retriever_for, workdir_path / "eval")
        if trainer.eval_every else None,
        import_params=lambda: model.from_pretrained_params(
            load_bert_params(checkpoint.weights_path, config)),
    )
    iterator = iter(batches)
    result = loop.train(iterator, iterator.example_batch())

    records = []
    if evaluate_zero_shot:
        records.append(evaluate_on_collection(evaluation, DenseRetriever(zero_shot, index="exact"),
                                              workdir_path / "zero_shot"))
    records.append(evaluate_on_collection(evaluation, retriever_for(result.params), workdir_path))
    write_comparison(workdir_path, records)
    write_training_summary(loop, result, data=data)
    return records[-1]
