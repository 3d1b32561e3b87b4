"""The AR2 job: a dual-encoder retriever and a cross-encoder ranker trained in alternation
(irjax/models/ar2.py), the negatives re-mined from the current retriever every `reindex_every`
steps, through the shared Trainer.

Rounds: round r covers steps [r * reindex_every, (r + 1) * reindex_every). Before it, the
retriever as it stands (the imported MiniLM for round 0) encodes the training corpus and
retrieves for every training query; ranks [negative_skip, negative_depth) minus judged documents
become the round's negatives (WORKDIR/ar2/negatives_step<start>.jsonl, reused on a rerun).
Each round is one `Trainer.train` up to its last step in the same workdir, so it resumes from the
previous round's checkpoint; the optimizer is built once for the whole run, so the learning-rate
schedule spans all rounds. WORKDIR/ar2/rounds.json records every round (steps, where its
negatives came from, mining seconds).

Writes WORKDIR/metrics.json as every training job does (the trained retriever on the eval split,
exact search), WORKDIR/zero_shot/metrics.json when `evaluate_zero_shot`, and the trained ranker
to WORKDIR/ranker (a CrossEncoderScorer directory).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from irjax.data.ar2_batches import AR2Batches
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.files import atomic_write_text
from irjax.jobs.bert_job_inputs import bert_job_inputs
from irjax.jobs.pair_data import DataConfig, collect_pairs
from irjax.jobs.summary import write_comparison, write_training_summary
from irjax.models.ar2 import AR2Model
from irjax.models.cross_encoder import CrossEncoderScorer
from irjax.models.cross_encoder_training import CrossEncoderModel
from irjax.models.dual_encoder import TextEncoder
from irjax.models.dual_encoder_training import DualEncoderModel
from irjax.models.efficiency import EncoderEfficiency
from irjax.models.hf_import import load_bert_params
from irjax.parallel.partitioning import create_mesh
from irjax.retrieval.dense import DenseRetriever, dual_encoder_retriever
from irjax.retrieval.hard_negatives import (HardNegatives, load_hard_negatives,
                                            negatives_from_run, save_hard_negatives)
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer import Trainer
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = OptimizerConfig(learning_rate=2e-5, warmup_fraction=0.1, decay="linear",
                                    weight_decay=0.01)


class RoundIterator:
    """One round's batches for the Trainer. Its position is saved as (round start, grain
    state); a checkpoint from an earlier round (the previous round's last step) starts this
    round's pipeline at its beginning, which is where that checkpoint's step left off."""

    def __init__(self, batches: AR2Batches):
        self.batches = batches
        self._inner = iter(batches)

    def __iter__(self) -> "RoundIterator":
        return self

    def __next__(self) -> Any:
        return next(self._inner)

    def get_state(self) -> dict[str, Any]:
        return {"round_start": self.batches.step_offset, "pipeline": self._inner.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        start = state.get("round_start") if isinstance(state, dict) else None
        if start is None or start > self.batches.step_offset:
            raise ValueError(f"not the state of an AR2 round up to step "
                             f"{self.batches.step_offset}: {state!r:.200}")
        if start == self.batches.step_offset:
            self._inner.set_state(state["pipeline"])

    def example_batch(self) -> dict[str, Any]:
        return self.batches.example_batch()


def train_ar2(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    data: DataConfig = DataConfig(num_hard_negatives=1),
    trainer: TrainerConfig = TrainerConfig(checkpoint_every=100, log_every=10),
    optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    temperature: float = 0.05,
    kl_weight: float = 1.0,
    ranker_weight: float = 1.0,
    reindex_every: int = 200,
    negative_depth: int = 100,
    negative_skip: int = 0,
    pair_max_length: int = 256,
    ranker: str | None = None,
    eval_max_length: int = 256,
    evaluate_zero_shot: bool = False,
    pretrained: str | None = None,
    data_dir: str | None = None,
    efficiency: EncoderEfficiency = EncoderEfficiency(),
) -> dict[str, Any]:
    """Trains the retriever (MiniLM, `pretrained`) and the ranker (a CrossEncoderScorer
    directory `ranker`, else MiniLM with a fresh head) with AR2 and evaluates the retriever on
    `eval_split`. `data.num_hard_negatives` retrieved negatives join each row's positive;
    `data.hard_negative_*` are unused (the negatives come from the retriever). `efficiency`:
    the retriever's switches; its `grad_cache_tokens` slices the ranker's pairs too (ar2.py)."""
    if reindex_every < 1:
        raise ValueError(f"reindex_every={reindex_every} must be >= 1 (steps per round)")
    if data.num_hard_negatives < 1:
        raise ValueError("AR2 needs DataConfig.num_hard_negatives >= 1 (retrieved negatives)")
    workdir_path, checkpoint, config, tokenizer, train, evaluation = bert_job_inputs(
        workdir, pretrained, dataset, train_split, eval_split, data_dir)
    pairs = collect_pairs(train, data)
    documents = {d.doc_id: d.contents for d in train.documents}

    mesh = create_mesh(*trainer.mesh_shape)
    retriever_model = DualEncoderModel(config, temperature=temperature, pooling=checkpoint.pooling,
                                       data_shards=mesh.shape["data"], efficiency=efficiency)
    start_ranker = (CrossEncoderScorer.load(ranker) if ranker
                    else CrossEncoderScorer.from_pretrained(pretrained))
    model = AR2Model(retriever_model, CrossEncoderModel(start_ranker.config),
                     kl_weight=kl_weight, ranker_weight=ranker_weight)
    name = f"{checkpoint.name}-ar2"

    def batches(negatives: HardNegatives, offset: int) -> AR2Batches:
        return AR2Batches(pairs, tokenizer, data.global_batch_size,
                          pair_max_length=pair_max_length, step_offset=offset,
                          query_max_length=data.query_max_length,
                          doc_max_length=data.doc_max_length,
                          num_hard_negatives=data.num_hard_negatives, hard_negatives=negatives,
                          documents=documents, seed=data.seed)

    def retriever_for(params: Any, cache: str) -> DenseRetriever:
        return dual_encoder_retriever(retriever_model, params, tokenizer, name, eval_max_length,
                                      cache_dir=str(workdir_path / cache))

    def imported() -> dict[str, Any]:
        return {"retriever": retriever_model.from_pretrained_params(
                    load_bert_params(checkpoint.weights_path, config)),
                "ranker": start_ranker.params}

    # the plan's length depends on the pairs and the batch only (not on the negatives)
    steps_per_epoch = batches({}, 0).steps_per_epoch
    total = trainer.resolved(steps_per_epoch).num_steps
    schedule = optimizer.resolved(total)
    tx = schedule.build()
    rounds_dir = workdir_path / "ar2"
    rounds: list[dict[str, Any]] = []
    params: Any = None
    result = None
    loop = None
    for start in range(0, total, reindex_every):
        end = min(start + reindex_every, total)
        path = rounds_dir / f"negatives_step{start:07d}.jsonl"
        record: dict[str, Any] = {"round": len(rounds), "start_step": start, "end_step": end}
        if path.exists():
            negatives = load_hard_negatives(path, train)
            record["negatives"] = "reused " + path.name
        else:
            if params is None and start > 0:  # a rerun: the retriever as of this round's start
                params = _params_at(model, workdir_path, trainer, tx, schedule, mesh, imported,
                                    batches({}, start), start)
            retriever_params = (params or imported())["retriever"]
            clock = time.perf_counter()
            run = retriever_for(retriever_params, "embedding_cache").retrieve(
                train, train.eval_queries(), negative_depth)
            negatives = negatives_from_run(train, run, negative_depth, negative_skip,
                                           source=f"the AR2 retriever at step {start}")
            save_hard_negatives(negatives, path)
            record.update(negatives=f"mined by the retriever at step {start}",
                          mining_s=round(time.perf_counter() - clock, 2))
        record["negatives_per_query"] = sum(map(len, negatives.values())) / max(len(negatives), 1)
        iterator = RoundIterator(batches(negatives, start))
        loop = Trainer(model, workdir_path, dataclasses.replace(trainer, num_steps=end), tx,
                       learning_rate_fn=schedule.learning_rate_at, mesh=mesh,
                       import_params=imported)
        result = loop.train(iterator, iterator.example_batch())
        params = result.params
        rounds.append(record)
        atomic_write_text(rounds_dir / "rounds.json", json.dumps(rounds, indent=2) + "\n")
        log.info("AR2 round %d done (steps %d-%d)", record["round"], start, end)

    assert result is not None and loop is not None
    CrossEncoderScorer(model.ranker.module, params["ranker"], tokenizer, name=f"{name}-ranker",
                       max_length=pair_max_length,
                       query_max_length=data.query_max_length).save(workdir_path / "ranker")
    records = []
    if evaluate_zero_shot:
        zero_shot = TextEncoder.from_pretrained(pretrained, max_length=eval_max_length)
        records.append(evaluate_on_collection(evaluation, DenseRetriever(zero_shot, index="exact"),
                                              workdir_path / "zero_shot"))
    records.append(evaluate_on_collection(evaluation, retriever_for(params["retriever"],
                                                                    "embedding_cache"),
                                          workdir_path))
    write_comparison(workdir_path, records)
    write_training_summary(loop, result, data=data, rounds=rounds, optimizer_settings=schedule,
                           ar2={"kl_weight": kl_weight, "ranker_weight": ranker_weight,
                                "reindex_every": reindex_every, "negative_depth": negative_depth,
                                "negative_skip": negative_skip, "ranker_start": ranker or
                                "MiniLM + fresh head"})
    return records[-1]


def _params_at(model: AR2Model, workdir: Path, trainer: TrainerConfig, tx: Any,
               schedule: OptimizerConfig, mesh: Any, imported: Any, batches: AR2Batches,
               step: int) -> Any:
    """The params of the workdir's checkpoint at `step` (a rerun that has no round negatives
    for this round yet stopped exactly there): a Trainer with nothing left to train restores it."""
    iterator = RoundIterator(batches)
    loop = Trainer(model, workdir, dataclasses.replace(trainer, num_steps=step), tx,
                   learning_rate_fn=schedule.learning_rate_at, mesh=mesh, import_params=imported)
    result = loop.train(iterator, iterator.example_batch())
    if result.start_step != step:
        raise RuntimeError(f"{workdir} holds no checkpoint at step {step} to mine round "
                           f"negatives from (it started at {result.start_step}); remove the "
                           "workdir's checkpoints or its ar2/ folder to restart")
    return result.params
