"""Continual indexing for DSI (DSI++, Mehta et al. 2023): index a corpus, add a batch of new
documents to the trained model, measure how much it forgets of the old ones, and mitigate the
forgetting by replaying pseudo-queries of old documents (generative memory) instead of their text.

    corpus --split--> D0 (old), D1 (new)
    phase1         D0 indexing + train judgments on D0       from scratch
    phase2_plain   D1 indexing + train judgments on D1       from phase1's params (fresh optimizer)
    phase2_replay  phase2_plain's data + pseudo-queries of D0 from phase1's params
    after each:    memorization Hits@1/10 of D0 and D1 docs, R@10/nDCG@10 of eval queries whose
                   relevant docs all lie in D0 (and in D1)

The docid scheme is built over all documents up front (WORKDIR/docids.json), so new documents
already have docids and the model's output vocabulary covers them; phase 1 simply never trains
on them. D0 text is never replayed in phase 2: storing and re-indexing old documents is what
DSI++ avoids, it replays only generated queries (`pseudo_queries`, JSONL {"doc_id", "queries"}
per line, e.g. from `irjax.decoding.query_generation.generate_queries`; only D0 entries are
used). Both phase-2 variants train the same number of steps; an epoch of phase 2 is one pass
over the plain (new documents only) mixture.

Every evaluation decodes over the docids of *all* documents (D0 and D1), in every phase, so the
candidate set is the same before and after and a change is the model's. Forgetting of a phase-2
variant = phase1 D0 Hits@1 - that variant's D0 Hits@1 (positive: forgot).

Writes WORKDIR/split.json, docids.json, phase1/, phase2_plain/, phase2_replay/ (each a trainer
workdir, with phase.json and eval/memorization.json, eval/d0_queries/, eval/d1_queries/),
continual.json, continual.md and continual.png (when matplotlib is installed). Each phase resumes
from its own checkpoints; rerunning a finished WORKDIR retrains nothing and re-evaluates. A phase
that finished is not retrained when settings change (phase 2 would keep its old start): change
settings with a new WORKDIR.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from irjax.data.collection import Collection, Document
from irjax.data.continual_split import (DocumentSplit, judgments_within, queries_answered_by,
                                        split_documents)
from irjax.data.docids import DocidError, DocidScheme
from irjax.data.dsi_examples import (DSIMixture, indexing_examples, pseudo_query_examples,
                                     retrieval_examples)
from irjax.data.seq2seq_pipeline import Seq2SeqBatches
from irjax.data.tokenization import SentencePieceTokenizer
from irjax.errors import ConfigError, InputFileError
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.data.resolve import open_collection
from irjax.retrieval.generative import GenerativeRetriever
from irjax.evaluation.memorization import memorization_probe, probe_documents
from irjax.files import atomic_write_text
from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import T5Config
from irjax.jobs.continual_report import write_report
from irjax.parallel.processes import is_logging_process
from irjax.jobs.choices import check_job_choices
from irjax.jobs.summary import write_training_summary
from irjax.jobs.train_dsi import (DSIData, docid_scheme_for, model_vocab_size,
                              read_pseudo_queries)
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer_config import TrainerConfig
from irjax.training.trainer import CHECKPOINT_SUBDIR, Trainer, TrainResult

log = logging.getLogger(__name__)

PHASE1, PLAIN, REPLAY = "phase1", "phase2_plain", "phase2_replay"
SPLIT_FILE = "split.json"
PARTS = ("d0", "d1")


def document_split(collection: Collection, workdir: Path, new_fraction: float | None,
                   new_doc_count: int | None, seed: int) -> DocumentSplit:
    """The split of this config, saved once; a WORKDIR split another way is refused."""
    split = split_documents(collection.doc_ids, new_fraction=new_fraction,
                            new_doc_count=new_doc_count, seed=seed)
    path = workdir / SPLIT_FILE
    if path.exists():
        if DocumentSplit.load(path) != split:
            raise ConfigError(f"{path} holds another D0/D1 split than this config gives (changed "
                              "new_fraction, new_doc_count, split_seed or corpus?); use a new "
                              "WORKDIR")
    elif is_logging_process():
        split.save(path)
    log.info("continual split: %d old (D0) and %d new (D1) documents", len(split.old),
             len(split.new))
    return split


def replay_memory(path: str, scheme: DocidScheme, old: Sequence[str]) -> dict[str, list[str]]:
    """Pseudo-queries of the old documents only; read before any training, so a wrong file
    fails in seconds, not after phase 1."""
    queries = read_pseudo_queries(path)
    unknown = [d for d in queries if d not in scheme]
    if unknown:
        raise DocidError(f"{path}: pseudo-queries name {len(unknown)} documents that are not in "
                         f"the corpus, e.g. {unknown[:5]}; were they generated for another one?")
    memory = {d: queries[d] for d in old if queries.get(d)}
    if not memory:
        raise InputFileError(f"{path} holds no pseudo-queries of the {len(old)} old (D0) documents; "
                             "replay needs them (or set replay=False)")
    log.info("generative memory: %d pseudo-queries of %d of %d old documents",
             sum(map(len, memory.values())), len(memory), len(old))
    return memory


def phase_mixture(train: Collection, scheme: DocidScheme, documents: Sequence[Document], *,
                  ratio: float, chunks_per_doc: int, chunk_length: int,
                  tokenizer: SentencePieceTokenizer, seed: int, min_epoch_size: int,
                  memory: Mapping[str, Sequence[str]] | None = None,
                  memory_weight: float = 1.0) -> DSIMixture:
    """Indexing examples of `documents`, retrieval examples of the train judgments that name
    them, and optional replayed pseudo-queries, weighted ratio : 1 : memory_weight. An epoch
    smaller than one batch (a small new batch) is stretched to `min_epoch_size`."""
    counts: dict[str, int] = {}
    examples = indexing_examples(documents, scheme, chunks_per_doc=chunks_per_doc,
                                 chunk_length=chunk_length, tokenizer=tokenizer, counts=counts)
    weights = {"indexing": ratio}
    judged = judgments_within(train, [d.doc_id for d in documents])
    retrieval = retrieval_examples(judged, scheme, counts=counts)
    if retrieval:
        examples += retrieval
        weights["retrieval"] = 1.0
    if memory is not None:
        examples += pseudo_query_examples(memory, scheme, counts=counts)
        weights["pseudo_query"] = memory_weight
    mixture = DSIMixture(examples, weights, seed=seed, counts=counts)
    if mixture.epoch_size < min_epoch_size:
        mixture = DSIMixture(examples, weights, seed=seed, counts=counts,
                             examples_per_epoch=min_epoch_size)
    return mixture


@dataclasses.dataclass
class _Stage:
    """What every phase shares: the model, its docids, the data shapes and the eval settings."""

    root: Path
    model: Seq2SeqModel
    scheme: DocidScheme
    tokenizer: SentencePieceTokenizer
    data: DSIData
    beam_size: int
    eval_batch_size: int
    probes: dict[str, list[Document]]
    query_sets: dict[str, Collection]

    def batches(self, mixture: DSIMixture) -> Seq2SeqBatches:
        return Seq2SeqBatches(mixture, self.tokenizer, self.data.global_batch_size,
                              inputs_max_length=self.data.inputs_max_length,
                              targets_max_length=self.scheme.max_length + 1)

    def train(self, name: str, batches: Seq2SeqBatches, trainer: TrainerConfig,
              optimizer: OptimizerConfig, init_checkpoint: Path | None) -> TrainResult:
        """Trains one phase in WORKDIR/<name>; `trainer` is resolved (its num_steps set)."""
        if init_checkpoint is not None:
            trainer = dataclasses.replace(trainer, init_checkpoint=str(init_checkpoint))
        loop = Trainer(self.model, self.root / name, trainer, optimizer)
        log.info("%s: %d steps, %s", name, trainer.num_steps, batches.mixture.summary())
        iterator = iter(batches)
        result = loop.train(iterator, iterator.example_batch())
        write_training_summary(
            loop, result, self.root / name / "phase.json", phase=name,
            init_checkpoint=trainer.init_checkpoint, mixture=batches.mixture.summary(),
            kind_sizes=batches.mixture.kind_sizes,
            kind_counts_per_epoch=batches.mixture.kind_counts,
            steps_per_epoch=batches.steps_per_epoch)
        return result

    def evaluate(self, name: str, result: TrainResult) -> dict[str, Any]:
        """The phase's row: memorization of D0/D1 docs and retrieval on D0-/D1-only queries."""
        retriever = GenerativeRetriever(self.model, result.params, self.scheme, self.tokenizer,
                                        beam_size=self.beam_size, batch_size=self.eval_batch_size,
                                        inputs_max_length=self.data.inputs_max_length,
                                        name=f"dsi-continual-{name}")
        out = self.root / name / "eval"
        row: dict[str, Any] = {"phase": name, "steps": result.step,
                               "resumed_from": result.resumed_from}
        memorization = {}
        for part in PARTS:
            probe = memorization_probe(retriever, self.probes[part], ks=(1, 10))
            memorization[part] = probe.to_json()
            row[f"{part}_hits@1"], row[f"{part}_hits@10"] = probe.hits[1], probe.hits[10]
        if is_logging_process():
            atomic_write_text(out / "memorization.json", json.dumps(
                {"phase": name, "steps": result.step, "beam_size": self.beam_size,
                 **memorization}, indent=2) + "\n")
        for part in PARTS:
            queries = self.query_sets[part]
            row[f"{part}_queries"] = len(queries.qrels)
            row[f"{part}_query_R@10"] = row[f"{part}_query_nDCG@10"] = None
            if queries.qrels:
                record = evaluate_on_collection(queries, retriever, out / f"{part}_queries")
                row[f"{part}_query_R@10"] = record["metrics"]["R@10"]
                row[f"{part}_query_nDCG@10"] = record["metrics"]["nDCG@10"]
        log.info("%s: %s", name, json.dumps(row))
        return row


def with_forgetting(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adds forgetting = phase1 D0 Hits@k - this row's D0 Hits@k (None for phase 1 itself)."""
    base = next(r for r in rows if r["phase"] == PHASE1)
    out = []
    for row in rows:
        first = row["phase"] == PHASE1
        out.append({**row, **{f"forgetting_hits@{k}": None if first else
                              base[f"d0_hits@{k}"] - row[f"d0_hits@{k}"] for k in (1, 10)}})
    return out


DEFAULT_OPTIMIZER = OptimizerConfig(learning_rate=1e-3, warmup_fraction=0.05, decay="linear",
                                    weight_decay=0.01)
DEFAULT_PHASE = TrainerConfig(num_epochs=10.0, checkpoint_every=500, log_every=50)


def continual_dsi(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    new_fraction: float | None = 0.1,
    new_doc_count: int | None = None,
    split_seed: int = 0,
    docid_scheme: str = "atomic",
    scheme_options: Mapping[str, Any] | None = None,
    t5_preset: str = "mini",
    t5_overrides: Mapping[str, Any] | None = None,
    label_smoothing: float = 0.0,
    data: DSIData = DSIData(),
    phase1: TrainerConfig = DEFAULT_PHASE,
    phase2: TrainerConfig = DEFAULT_PHASE,
    phase1_optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    phase2_optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    replay: bool = True,
    beam_size: int = 20,
    eval_batch_size: int = 32,
    memorization_sample: int | None = 1000,
    pretrained: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Runs phase 1, the phase-2 variants and their evaluations; see the module docstring.

    `data` shapes every phase's batches (global batch size, input length, indexing : retrieval
    ratio, chunks per document, mixture seed); its `pseudo_queries` file is the generative
    memory replayed in phase 2 (only D0 entries), weighted `pseudo_query_weight` relative to
    D1 indexing (ratio) and retrieval (1). `phase1`/`phase2` say how long and how each phase
    trains (phase 2's epochs are epochs of the plain, new-documents-only mixture; both phase-2
    variants train that many steps). `memorization_sample` caps the probed documents per part
    (D0, D1; None: all).
    """
    check_job_choices("continual_dsi", docid_scheme=docid_scheme, t5_preset=t5_preset)
    if data.indexing_to_retrieval_ratio <= 0:
        raise ConfigError("continual indexing needs indexing examples: indexing_to_retrieval_ratio "
                          f"must be > 0, got {data.indexing_to_retrieval_ratio}")
    if replay and not data.pseudo_queries:
        raise ConfigError("replay=True needs pseudo_queries (DSIData.pseudo_queries, a JSONL file "
                          "of generated queries per document); pass one or set replay=False to run "
                          "only phase2_plain")
    if replay and not (math.isfinite(data.pseudo_query_weight) and data.pseudo_query_weight > 0):
        raise ConfigError(f"replay weight (DSIData.pseudo_query_weight) must be a positive "
                          f"number, got {data.pseudo_query_weight}")
    root = Path(workdir)
    train = open_collection(dataset, train_split, data_dir)
    evaluation = open_collection(dataset, eval_split, data_dir)
    split = document_split(train, root, new_fraction, new_doc_count, split_seed)
    tokenizer = SentencePieceTokenizer()
    scheme = docid_scheme_for(train, root, docid_scheme, scheme_options or {}, pretrained)
    log.info("docids: %s", scheme.describe())
    memory = replay_memory(data.pseudo_queries, scheme, split.old) if replay else None

    by_id = {d.doc_id: d for d in train.documents}
    documents = {"d0": [by_id[d] for d in split.old], "d1": [by_id[d] for d in split.new]}
    stage = _Stage(
        root=root,
        model=Seq2SeqModel(T5Config.preset(t5_preset, vocab_size=model_vocab_size(scheme),
                                           **dict(t5_overrides or {})),
                           label_smoothing=label_smoothing),
        scheme=scheme, tokenizer=tokenizer, data=data, beam_size=beam_size,
        eval_batch_size=eval_batch_size,
        probes={p: probe_documents(documents[p], memorization_sample, split_seed) for p in PARTS},
        query_sets={"d0": queries_answered_by(evaluation, split.old),
                    "d1": queries_answered_by(evaluation, split.new)},
    )
    mix = dict(ratio=data.indexing_to_retrieval_ratio, chunks_per_doc=data.chunks_per_doc,
               chunk_length=data.inputs_max_length - 1, tokenizer=tokenizer, seed=data.seed,
               min_epoch_size=data.global_batch_size)

    old_batches = stage.batches(phase_mixture(train, scheme, documents["d0"], **mix))
    phase1 = phase1.resolved(old_batches.steps_per_epoch)
    first = stage.train(PHASE1, old_batches, phase1, phase1_optimizer, None)
    if first.preempted:
        log.warning("phase1 stopped at a preemption notice; rerun to continue")
        return {"preempted": PHASE1}
    rows = [stage.evaluate(PHASE1, first)]

    init = root / PHASE1 / CHECKPOINT_SUBDIR
    variants = {PLAIN: stage.batches(phase_mixture(train, scheme, documents["d1"], **mix))}
    phase2 = phase2.resolved(variants[PLAIN].steps_per_epoch)
    if memory is not None:
        variants[REPLAY] = stage.batches(phase_mixture(
            train, scheme, documents["d1"], memory=memory,
            memory_weight=data.pseudo_query_weight, **mix))
    for name, batches in variants.items():
        result = stage.train(name, batches, phase2, phase2_optimizer, init)
        if result.preempted:
            log.warning("%s stopped at a preemption notice; rerun to continue", name)
            return {"preempted": name}
        rows.append(stage.evaluate(name, result))

    report = {
        "dataset": train.name, "train_split": train_split, "eval_split": eval_split,
        "split": {"seed": split.seed, "num_old": len(split.old), "num_new": len(split.new),
                  "file": SPLIT_FILE},
        "docids": scheme.describe(),
        "probed_documents": {p: len(stage.probes[p]) for p in PARTS},
        "settings": {"beam_size": beam_size, "memorization_sample": memorization_sample,
                     "phase1_steps": phase1.num_steps, "phase2_steps": phase2.num_steps,
                     "replay": replay, "replay_weight": data.pseudo_query_weight,
                     "pseudo_queries": data.pseudo_queries,
                     "phase1_learning_rate": phase1_optimizer.learning_rate,
                     "phase2_learning_rate": phase2_optimizer.learning_rate,
                     "t5_preset": t5_preset},
        "definitions": {
            "dX_hits@k": "share of probed DX documents whose own docid is in the top k when the "
                         "document's indexing text is the query (docids of all documents allowed)",
            "dX_query_R@10": "R@10 on eval-split queries whose relevant documents all lie in DX",
            "forgetting_hits@k": "phase1 d0_hits@k minus this phase's d0_hits@k",
        },
        "rows": with_forgetting(rows),
    }
    if is_logging_process():
        write_report(root, report)
    return report
