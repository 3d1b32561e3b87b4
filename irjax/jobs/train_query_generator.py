"""The query-generation job (docT5query / DSI-QG): a T5 trained from scratch on the training
qrels to map document text -> query text, then sampled for every corpus document.

    train qrels (grade > 0) --split by query--> train / 5% held-out (document -> query) examples
      --DSIMixture + Seq2SeqBatches--> Trainer(Seq2SeqModel) --generate_queries--> pseudo queries

Writes, in WORKDIR:
    pseudo_queries.jsonl   {"doc_id", "queries"} per corpus document with text (corpus order;
                           empty ones are skipped and counted), the input of
                           `DSIData.pseudo_queries` (gin/train/dsi_qg_scifact.gin)
    samples.md             document snippets with their generated (and, for held-out documents,
                           real) queries, for a person to judge
    training_summary.json  steps, held-out token loss (queries never trained on), the same loss on
                           training pairs, and the lexical signals of evaluation/query_quality.py
                           for the generated queries next to the real training queries

Training resumes from WORKDIR's checkpoints; generation is deterministic given the seed, so a
rerun of a finished job samples again (the slow half on CPU) and rewrites the same files. Generation runs with the full params on one
host (as DSI decoding does).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irjax.data.collection import Collection
from irjax.data.dsi_examples import DSIMixture, Seq2SeqExample
from irjax.data.query_generation_examples import QueryGenerationData, query_generation_examples
from irjax.data.seq2seq_pipeline import Seq2SeqBatches
from irjax.data.tokenization import SentencePieceTokenizer, pad_sequences
from irjax.decoding.query_generation import generate_queries
from irjax.data.resolve import open_collection
from irjax.errors import ConfigError
from irjax.evaluation.query_quality import query_quality
from irjax.files import atomic_write_text
from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import T5Config
from irjax.parallel.processes import is_logging_process
from irjax.jobs.choices import check_job_choices
from irjax.jobs.summary import write_training_summary
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer import Trainer
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)
PSEUDO_QUERIES_FILE = "pseudo_queries.jsonl"


class TeacherForcedLoss:
    """Token-level cross-entropy (nats/token) and accuracy of fixed examples, dropout off, summed
    over all target tokens (EOS included) before dividing; one jitted fixed-shape batch function
    (padding rows weigh 0), so evaluating during training compiles once."""

    def __init__(self, model: Seq2SeqModel, examples: Sequence[Seq2SeqExample],
                 tokenizer: SentencePieceTokenizer, batch_size: int, inputs_max_length: int,
                 targets_max_length: int):
        self.examples = list(examples)
        self._batches = []
        for start in range(0, len(self.examples), batch_size):
            part = self.examples[start:start + batch_size]
            inputs = pad_sequences(tokenizer.tokenize([e.inputs for e in part], inputs_max_length),
                                   tokenizer.pad_id, pad_to=inputs_max_length, rows=batch_size)
            targets = pad_sequences([e.targets for e in part], tokenizer.pad_id,
                                    pad_to=targets_max_length, rows=batch_size)
            self._batches.append({"inputs": inputs.ids, "inputs_mask": inputs.mask,
                                  "targets": targets.ids, "targets_mask": targets.mask})

        @jax.jit
        def sums(params: Any, batch: Mapping[str, jax.Array]) -> jax.Array:
            logits = model.logits(params, batch)
            ce, _ = model.token_losses(logits, batch["targets"])
            weights = batch["targets_mask"].astype(jnp.float32)
            correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
            return jnp.stack([jnp.sum(ce * weights), jnp.sum(correct * weights), jnp.sum(weights)])

        self._sums = sums

    def __call__(self, params: Any, step: int | None = None) -> dict[str, float]:
        """The metrics at `params` ({} without examples); `step` lets the Trainer call it."""
        if not self.examples:
            return {}
        total = np.zeros(3)
        for batch in self._batches:
            total += np.asarray(jax.device_get(self._sums(params, batch)), np.float64)
        ce, correct, tokens = total
        return {"cross_entropy": ce / tokens, "perplexity": math.exp(min(ce / tokens, 50.0)),
                "token_accuracy": correct / tokens, "target_tokens": int(tokens),
                "pairs": len(self.examples)}


def write_pseudo_queries(path: Path, queries: Mapping[str, list[str]]) -> None:
    """One {"doc_id", "queries"} JSON object per line, written atomically."""
    lines = [json.dumps({"doc_id": doc_id, "queries": doc_queries}, ensure_ascii=False)
             for doc_id, doc_queries in queries.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")


def samples_markdown(collection: Collection, queries: Mapping[str, list[str]],
                     data: QueryGenerationData, count: int, seed: int,
                     snippet_chars: int = 300) -> str:
    """Held-out documents first (their real query shown for comparison), then seeded random ones."""
    texts = {d.doc_id: d.contents for d in collection.documents}
    real: dict[str, list[str]] = {}
    for e in data.heldout:
        real.setdefault(e.doc_id, []).append(collection.queries[e.source_id])
    chosen = [d for d in real if d in queries][:count]
    others = [d for d in queries if d not in real]
    rng = np.random.default_rng(seed)
    chosen += [others[i] for i in rng.permutation(len(others))[:max(0, count - len(chosen))]]
    out = [f"# Generated queries: {collection.name}, generator trained on {collection.split!r}\n",
           f"{len(chosen)} documents: held-out ones first (their real query was never trained "
           "on), then random corpus documents.\n"]
    for doc_id in chosen:
        text = " ".join(texts[doc_id].split())
        snippet = text[:snippet_chars] + ("…" if len(text) > snippet_chars else "")
        out.append(f"## {doc_id}\n\n> {snippet}\n")
        out += [f"- real (held out): {q}" for q in real.get(doc_id, [])]
        out += [f"- generated: {q if q else '(blank)'}" for q in queries[doc_id]]
        out.append("")
    return "\n".join(out) + "\n"


@dataclasses.dataclass(frozen=True)
class QuerySampling:
    """How queries are sampled for every document once the generator is trained (top_k=1 is
    greedy; `batch_size` documents per compiled sampling call)."""

    num_queries_per_doc: int = 5
    top_k: int | None = 10
    top_p: float | None = None
    temperature: float = 1.0
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("num_queries_per_doc", "batch_size", "top_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"QuerySampling.{name}={value} must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"QuerySampling.top_p={self.top_p} must be in (0, 1]")
        if not self.temperature > 0:
            raise ConfigError(f"QuerySampling.temperature={self.temperature} must be > 0")


DEFAULT_OPTIMIZER = OptimizerConfig(learning_rate=1e-3, warmup_fraction=0.05, decay="linear",
                                    weight_decay=0.01)


def train_query_generator(
    dataset: str,
    workdir: str,
    train_split: str = "train",
    t5_preset: str = "mini",
    t5_overrides: Mapping[str, Any] | None = None,
    label_smoothing: float = 0.0,
    global_batch_size: int = 32,
    inputs_max_length: int = 128,
    targets_max_length: int = 32,
    heldout_fraction: float = 0.05,
    trainer: TrainerConfig = TrainerConfig(num_epochs=20.0, checkpoint_every=500, log_every=50,
                                           eval_every=100),
    optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    sampling: QuerySampling = QuerySampling(),
    num_samples_shown: int = 10,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Trains document -> query T5 on `train_split`, samples queries for the whole corpus, and
    returns the training summary (also written to WORKDIR/training_summary.json)."""
    check_job_choices("train_query_generator", t5_preset=t5_preset)
    workdir_path = Path(workdir)
    collection = open_collection(dataset, train_split, data_dir)
    tokenizer = SentencePieceTokenizer()
    seed = trainer.seed
    data = query_generation_examples(collection, tokenizer, targets_max_length=targets_max_length,
                                     heldout_fraction=heldout_fraction, seed=seed)
    log.info("query generation examples: %s", data.summary())
    mixture = DSIMixture(data.train, seed=seed)
    batches = Seq2SeqBatches(mixture, tokenizer, global_batch_size,
                             inputs_max_length=inputs_max_length,
                             targets_max_length=targets_max_length)
    trainer = trainer.resolved(batches.steps_per_epoch)

    config = T5Config.preset(t5_preset, **dict(t5_overrides or {}))
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"t5 vocab_size={config.vocab_size} is below the SentencePiece "
                          f"vocabulary ({tokenizer.vocab_size}); leave it at 32128")
    model = Seq2SeqModel(config, label_smoothing=label_smoothing)
    shapes = (tokenizer, global_batch_size, inputs_max_length, targets_max_length)
    heldout_loss = TeacherForcedLoss(model, data.heldout, *shapes)
    train_pairs_loss = TeacherForcedLoss(  # as many training pairs, to see the generalisation gap
        model, data.train[:max(len(data.heldout), global_batch_size)], *shapes)

    def heldout_curve(params: Any, step: int) -> dict[str, float]:
        """Logged as eval/heldout_* in WORKDIR/metrics.jsonl: when to stop training."""
        metrics = heldout_loss(params)
        return {f"heldout_{k}": metrics[k] for k in ("cross_entropy", "token_accuracy")}

    loop = Trainer(model, workdir_path, trainer, optimizer,
                   evaluate=heldout_curve if data.heldout else None)
    iterator = iter(batches)
    result = loop.train(iterator, iterator.example_batch())
    if result.preempted:
        log.warning("stopped at step %d by a preemption notice; rerun to finish", result.step)
        return {"steps": result.step, "preempted": True}

    heldout, train_loss = heldout_loss(result.params), train_pairs_loss(result.params)
    log.info("held-out loss %s, training-pair loss %s", heldout, train_loss)

    start = time.perf_counter()
    documents = [d for d in collection.documents if d.contents.strip()]
    queries = generate_queries(model, result.params, documents, tokenizer,
                               sampling.num_queries_per_doc, top_k=sampling.top_k,
                               top_p=sampling.top_p, temperature=sampling.temperature,
                               max_length=targets_max_length, inputs_max_length=inputs_max_length,
                               batch_size=sampling.batch_size, seed=seed)
    seconds = time.perf_counter() - start
    texts = {d.doc_id: d.contents for d in collection.documents}
    real: dict[str, list[str]] = {}
    for e in data.train:
        real.setdefault(e.doc_id, []).append(collection.queries[e.source_id])
    if is_logging_process():
        write_pseudo_queries(workdir_path / PSEUDO_QUERIES_FILE, queries)
        samples = samples_markdown(collection, queries, data, num_samples_shown, seed)
        atomic_write_text(workdir_path / "samples.md", samples)
        print("\n".join(samples.splitlines()[:40]))
    summary = write_training_summary(
        loop, result, heldout_loss=heldout, train_pairs_loss=train_loss,
        examples=data.summary(), steps_per_epoch=batches.steps_per_epoch,
        generation={
            "documents": len(queries),
            "empty_documents_skipped": len(collection.documents) - len(documents),
            "queries_per_doc": sampling.num_queries_per_doc, "top_k": sampling.top_k,
            "top_p": sampling.top_p, "temperature": sampling.temperature,
            "max_length": targets_max_length,
            "blank_queries": sum(not q for qs in queries.values() for q in qs),
            "seconds": seconds, "docs_per_s": len(queries) / max(seconds, 1e-9)},
        quality_generated=query_quality(texts, queries),
        quality_real_train_queries=query_quality(texts, real), t5=config)
    if is_logging_process():
        print(json.dumps({k: summary[k] for k in ("heldout_loss", "quality_generated",
                                                  "quality_real_train_queries")}, indent=2))
    return summary
