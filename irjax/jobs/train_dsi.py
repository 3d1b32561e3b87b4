"""The DSI training job: a T5 trained from scratch to map document text and queries to docids,
evaluated by trie-constrained beam search like every other retriever.

    collection --(docid scheme)--> docids --(indexing + retrieval [+ pseudo-query] examples)-->
    Seq2SeqBatches --> Trainer(Seq2SeqModel) --> GenerativeRetriever --> run --> metrics

Writes WORKDIR/metrics.json (the eval split), WORKDIR/docids.json (the scheme, reused when the
run resumes), WORKDIR/comparison.md and WORKDIR/training_summary.json. With `dense_baseline`
the zero-shot MiniLM dual encoder is evaluated in the same run (WORKDIR/dense/), so decoding
throughput is compared with dense search on the same machine; `reference_metrics` names
another run's metrics.json (e.g. the fine-tuned dual encoder) to put in the table.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from irjax.data.collection import Collection
from irjax.data.docids import DocidScheme, create_docid_scheme, load_docid_scheme
from irjax.data.dsi_examples import build_dsi_mixture
from irjax.data.seq2seq_pipeline import Seq2SeqBatches
from irjax.data.tokenization import SentencePieceTokenizer
from irjax.errors import ConfigError, InputFileError, MissingFileError
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.data.resolve import open_collection
from irjax.retrieval.generative import GenerativeRetriever
from irjax.retrieval.dense import DenseRetriever
from irjax.models.dual_encoder import TextEncoder
from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import T5Config
from irjax.parallel.processes import is_logging_process
from irjax.jobs.choices import check_job_choices
from irjax.jobs.summary import write_comparison, write_training_summary
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer import Trainer
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)
DOCIDS_FILE = "docids.json"


@dataclasses.dataclass(frozen=True)
class DSIData:
    """What the seq2seq pipeline draws: the example mixture and its shapes."""

    global_batch_size: int = 64
    inputs_max_length: int = 64
    indexing_to_retrieval_ratio: float = 1.0
    chunks_per_doc: int = 1
    pseudo_queries: str | None = None      # JSONL {"doc_id": ..., "queries": [...]} per line
    pseudo_query_weight: float = 1.0
    seed: int = 0


def read_pseudo_queries(path: str | Path) -> dict[str, list[str]]:
    """doc_id -> generated queries, from `generate_queries`' JSONL output."""
    out: dict[str, list[str]] = {}
    if not Path(path).is_file():
        raise MissingFileError(f"pseudo-query file {path} does not exist; generate it with the "
                               "train_query_generator job (gin/train/qg_scifact.gin) or fix the path")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id, queries = row["doc_id"], row["queries"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InputFileError(f"{path}:{lineno}: expected a JSON object with 'doc_id' and "
                                     f"'queries' ({e})") from e
            if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
                raise InputFileError(f"{path}:{lineno}: 'queries' must be a list of strings")
            out.setdefault(str(doc_id), []).extend(q for q in queries if q.strip())
    return out


def document_embeddings(collection: Collection, pretrained: str | None) -> np.ndarray:
    """Dual-encoder document vectors (cached on disk) for semantic docids."""
    encoder = TextEncoder.from_pretrained(pretrained, max_length=256)
    return DenseRetriever(encoder).encode_corpus(collection)


def docid_scheme_for(collection: Collection, workdir: Path, scheme: str,
                     options: Mapping[str, Any], pretrained: str | None) -> DocidScheme:
    """The workdir's scheme when resuming, else a new one (saved before training starts)."""
    path = workdir / DOCIDS_FILE
    if path.exists():
        loaded = load_docid_scheme(path, collection)
        if loaded.name != scheme:
            raise ConfigError(f"{path} holds {loaded.name!r} docids but the config asks for "
                              f"{scheme!r}; use a new WORKDIR")
        return loaded
    options = dict(options)
    if scheme == "semantic" and "embeddings" not in options:
        options["embeddings"] = document_embeddings(collection, pretrained)
    built = create_docid_scheme(scheme, collection, **options)
    if is_logging_process():
        built.save(path)
    return built


def model_vocab_size(scheme: DocidScheme, multiple: int = 128) -> int:
    """The scheme's vocabulary rounded up (T5 pads its 32,100 pieces to 32,128 the same way)."""
    return int(math.ceil(scheme.vocab_size / multiple) * multiple)


DEFAULT_OPTIMIZER = OptimizerConfig(learning_rate=1e-3, warmup_fraction=0.05, decay="linear",
                                    weight_decay=0.01)


def train_dsi(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    docid_scheme: str = "atomic",
    scheme_options: Mapping[str, Any] | None = None,
    t5_preset: str = "mini",
    t5_overrides: Mapping[str, Any] | None = None,
    label_smoothing: float = 0.0,
    data: DSIData = DSIData(),
    trainer: TrainerConfig = TrainerConfig(num_epochs=10.0, checkpoint_every=500, log_every=50),
    optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    beam_size: int = 20,
    eval_batch_size: int = 32,
    dense_baseline: bool = False,
    reference_metrics: Sequence[str] = (),
    pretrained: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Trains DSI on `train_split` (indexing the whole corpus) and evaluates on `eval_split`."""
    check_job_choices("train_dsi", docid_scheme=docid_scheme, t5_preset=t5_preset)
    workdir_path = Path(workdir)
    train = open_collection(dataset, train_split, data_dir)
    evaluation = open_collection(dataset, eval_split, data_dir)
    tokenizer = SentencePieceTokenizer()
    scheme = docid_scheme_for(train, workdir_path, docid_scheme, scheme_options or {}, pretrained)
    log.info("docids: %s", scheme.describe())

    pseudo = read_pseudo_queries(data.pseudo_queries) if data.pseudo_queries else None
    mixture = build_dsi_mixture(
        train, scheme, indexing_to_retrieval_ratio=data.indexing_to_retrieval_ratio,
        pseudo_queries=pseudo, pseudo_query_weight=data.pseudo_query_weight,
        chunks_per_doc=data.chunks_per_doc, chunk_length=data.inputs_max_length - 1,
        tokenizer=tokenizer, seed=data.seed)
    batches = Seq2SeqBatches(mixture, tokenizer, data.global_batch_size,
                             inputs_max_length=data.inputs_max_length)
    trainer = trainer.resolved(batches.steps_per_epoch)

    config = T5Config.preset(t5_preset, vocab_size=model_vocab_size(scheme),
                             **dict(t5_overrides or {}))
    model = Seq2SeqModel(config, label_smoothing=label_smoothing)
    loop = Trainer(model, workdir_path, trainer, optimizer)
    iterator = iter(batches)
    result = loop.train(iterator, iterator.example_batch())

    records = [json.loads(Path(p).read_text()) for p in reference_metrics if Path(p).exists()]
    if dense_baseline:
        dense = TextEncoder.from_pretrained(pretrained, max_length=256)
        records.append(evaluate_on_collection(
            evaluation, DenseRetriever(dense, index="exact", warm_queries=True),
            workdir_path / "dense"))
    retriever = GenerativeRetriever(model, result.params, scheme, tokenizer, beam_size=beam_size,
                                    batch_size=eval_batch_size,
                                    inputs_max_length=data.inputs_max_length,
                                    name=f"dsi-t5{t5_preset}-{docid_scheme}")
    record = evaluate_on_collection(evaluation, retriever, workdir_path)
    records.append(record)
    write_comparison(workdir_path, records)
    write_training_summary(loop, result, docids=scheme.describe(), t5=config,
                           mixture=mixture.summary(), steps_per_epoch=batches.steps_per_epoch,
                           data=data, throughput_queries_per_s=_throughputs(records))
    return record


def _throughputs(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Queries per second of the query-time work: decoding for DSI, query encoding + search for
    a dense retriever (corpus encoding and index building are offline)."""
    out = {}
    for r in records:
        t = r.get("timings", {})
        if "decode_s" in t:
            out[r["model"]] = r["num_queries"] / max(t["decode_s"], 1e-9)
        elif "search_s" in t:
            out[r["model"]] = r["num_queries"] / max(t["search_s"] + t.get("encode_queries_s", 0),
                                                      1e-9)
    return out
