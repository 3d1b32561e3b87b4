"""The multi-vector (XTR / ColBERT) training job: the dual-encoder job's data and trainer with a
`MultiVectorModel` in place of the pooled encoder, evaluated by brute-force token retrieval.

Writes the same files as `train_dual_encoder`: WORKDIR/metrics.json (the fine-tuned model on the
eval split, scored by `MaxSimRetriever` in `eval_mode`), WORKDIR/comparison.md and
WORKDIR/training_summary.json. A multi-vector model has no meaningful zero-shot point (its
projection starts random), so the optional baseline is the pooled MiniLM dense retriever, written
to WORKDIR/zero_shot_dense/ for the comparison table.
"""
from __future__ import annotations

import logging
from typing import Any

from irjax.evaluation.evaluate import evaluate_on_collection, periodic_evaluation
from irjax.evaluation.multi_vector_study import study_multi_vector
from irjax.jobs.bert_job_inputs import bert_job_inputs
from irjax.jobs.pair_data import DataConfig, training_batches
from irjax.jobs.summary import write_comparison, write_training_summary
from irjax.models.dual_encoder import TextEncoder
from irjax.models.hf_import import load_bert_params
from irjax.models.multi_vector import MultiVectorModel
from irjax.jobs.choices import check_job_choices
from irjax.retrieval.dense import DenseRetriever
from irjax.retrieval.multi_vector import MaxSimRetriever, punctuation_ids
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer import Trainer
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = OptimizerConfig(learning_rate=3e-5, warmup_fraction=0.1, decay="linear",
                                    weight_decay=0.01)


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
    data: DataConfig = DataConfig(),
    trainer: TrainerConfig = TrainerConfig(checkpoint_every=100, log_every=10),
    optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    eval_mode: str = "xtr",
    k_prime: int = 1024,
    eval_doc_max_length: int | None = None,
    eval_batch_size: int = 32,
    evaluate_dense_baseline: bool = False,
    study: bool = False,
    study_options: dict[str, Any] | None = None,
    pretrained: str | None = None,
    data_dir: str | None = None,
    pooling: str = "token",
    gate: bool = False,
    gate_l1: float = 0.0,
    gate_scale: float = 1000.0,
    gate_threshold: float = 0.0,
    gate_thresholds: tuple[float, ...] = (),
    gate_drop_fractions: tuple[float, ...] = (),
) -> dict[str, Any]:
    """Fine-tunes MiniLM + a token projection with the XTR (or ColBERT) objective, then
    evaluates on `eval_split` with exhaustive token retrieval.

    With `study`, every inference path (exhaustive MaxSim, XTR through a ScaNN token index,
    MaxSim over XTR's candidates, MUVERA) is also evaluated on the same corpus encoding and
    reported in WORKDIR/paths/study.{json,md} (`irjax.evaluation.multi_vector_study`);
    `study_options` are passed on to `study_multi_vector`. ColBERTer's reductions:
    `pooling='word'` (one vector per whole word) and `gate` (a learned keep/drop gate per
    document vector, `gate_l1` the weight of its L1 penalty; see `MultiVectorModel`);
    metrics.json then also holds vectors and bytes per document, and each of
    `gate_thresholds` evaluates the same encoding with only the document vectors whose gate
    exceeds it kept, into WORKDIR/gate_threshold_<t>/ (size against quality); each of
    `gate_drop_fractions` likewise with the threshold that drops that fraction of the stored
    vectors (the lowest gates), into WORKDIR/gate_drop_<fraction>/. Rerunning on a finished workdir
    restores the last checkpoint and only evaluates."""
    check_job_choices("train_multi_vector", objective=objective, eval_mode=eval_mode,
                      pooling=pooling)
    if (gate_thresholds or gate_drop_fractions) and not gate:
        raise ValueError("train_multi_vector.gate_thresholds / gate_drop_fractions prune by the "
                         "learned gate: set train_multi_vector.gate = True or leave them empty")
    if any(t < gate_threshold for t in gate_thresholds):
        raise ValueError(f"train_multi_vector.gate_thresholds={gate_thresholds} must be >= "
                         f"gate_threshold={gate_threshold} (lower gates are never stored)")
    if any(not 0 < f < 1 for f in gate_drop_fractions):
        raise ValueError(f"train_multi_vector.gate_drop_fractions={gate_drop_fractions} must lie "
                         "in (0, 1): the share of stored document vectors to drop")
    workdir_path, checkpoint, config, tokenizer, train, evaluation = bert_job_inputs(
        workdir, pretrained, dataset, train_split, eval_split, data_dir)

    batches = training_batches(train, tokenizer, data)  # no pooled encoder: random sampler only
    trainer = trainer.resolved(batches.steps_per_epoch)

    skip_ids = punctuation_ids(tokenizer) if skip_punctuation else ()
    model = MultiVectorModel(config, dim=dim, objective=objective, k_train=k_train,
                             temperature=temperature, doc_skip_ids=skip_ids, pooling=pooling,
                             continuation_ids=tokenizer.continuation_ids,
                             special_ids=tokenizer.special_ids, gate=gate, gate_l1=gate_l1,
                             gate_scale=gate_scale, gate_threshold=gate_threshold)
    name = f"{checkpoint.name}-{objective}" + ("-words" if pooling == "word" else "") + (
        "-gated" if gate else "")

    def retriever_for(params: Any) -> MaxSimRetriever:
        return MaxSimRetriever(model, params, tokenizer,
                               doc_max_length=eval_doc_max_length or data.doc_max_length,
                               query_max_length=data.query_max_length, batch_size=eval_batch_size,
                               mode=eval_mode, k_prime=k_prime, doc_skip_ids=skip_ids,
                               name=f"{name}+{eval_mode}")

    loop = Trainer(
        model, workdir_path, trainer, optimizer,
        evaluate=periodic_evaluation(evaluation, retriever_for, workdir_path / "eval")
        if trainer.eval_every else None,
        import_params=lambda: model.from_pretrained_params(
            load_bert_params(checkpoint.weights_path, config)),
    )
    iterator = iter(batches)
    result = loop.train(iterator, iterator.example_batch())

    records = []
    if evaluate_dense_baseline:
        dense = TextEncoder.from_pretrained(pretrained, max_length=eval_doc_max_length or 256)
        records.append(evaluate_on_collection(evaluation, DenseRetriever(dense, index="exact"),
                                              workdir_path / "zero_shot_dense"))
    retriever = retriever_for(result.params)
    records.append(evaluate_on_collection(evaluation, retriever, workdir_path))
    final = records[-1]
    pruned = [(t, f"gate_threshold_{t:g}") for t in gate_thresholds] + [
        (retriever.gate_quantile(evaluation, f), f"gate_drop_{f:g}") for f in gate_drop_fractions]
    for threshold, folder in pruned:   # each shares the retriever's corpus encoding
        records.append(evaluate_on_collection(evaluation, retriever.pruned(threshold),
                                              workdir_path / folder))
    if study:  # shares the retriever's corpus encoding
        study_multi_vector(evaluation, retriever, workdir_path / "paths", k_prime=k_prime,
                           **(study_options or {}))
    write_comparison(workdir_path, records)
    write_training_summary(loop, result, data=data,
                           model={"objective": objective, "k_train": k_train, "dim": dim,
                                  "temperature": temperature, "skip_punctuation": skip_punctuation,
                                  "pooling": pooling, "gate": gate, "gate_l1": gate_l1,
                                  "gate_scale": gate_scale, "gate_threshold": gate_threshold},
                           eval={"mode": eval_mode, "k_prime": k_prime})
    return final
