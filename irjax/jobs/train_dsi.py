"""The DSI training job: a seq2seq model trained to map document text and queries to docids,
evaluated by trie-constrained beam search like every other retriever.

    collection --(docid scheme)--> docids --(indexing + retrieval [+ generated pseudo queries]
    [+ corpus pseudo queries: spans, sentences, titles] examples)--> Seq2SeqBatches -->
    Trainer(Seq2SeqModel | WarmSeq2SeqModel) --> GenerativeRetriever --> run --> metrics

The model is a T5 trained from scratch (`t5_preset`), or with `warm_start` a MiniLM encoder under
a T5 decoder trained from scratch, optionally starting as the fine-tuned dual encoder
`dual_encoder` (jobs/dsi_warm_start.py). That dual encoder (a train_dual_encoder run's
checkpoints, read-only) also gives semantic docids their embeddings.

Writes WORKDIR/metrics.json (the eval split), WORKDIR/docids.json (the scheme, reused when the
run resumes), WORKDIR/comparison.md and WORKDIR/training_summary.json. With `dense_baseline`
a dual encoder is evaluated in the same run (WORKDIR/dense/: the fine-tuned one when
`dual_encoder` is set, else zero-shot MiniLM), so decoding throughput is compared with dense
search on the same machine; `reference_metrics` names other runs' metrics.json to put in the
table. With `evaluate_init` the model is also evaluated before training (WORKDIR/init/).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence


from irjax.data.collection import Collection
from irjax.data.docids import DocidScheme, create_docid_scheme, load_docid_scheme
from irjax.data.corpus_queries import corpus_queries, source_counts
from irjax.data.dsi_examples import build_dsi_mixture
from irjax.data.seq2seq_pipeline import Seq2SeqBatches
from irjax.data.tokenization import SentencePieceTokenizer
from irjax.errors import ConfigError, InputFileError, MissingFileError
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.data.resolve import open_collection
from irjax.retrieval.generative import GenerativeRetriever
from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import T5Config
from irjax.parallel.processes import is_logging_process
from irjax.jobs.choices import check_job_choices
from irjax.jobs.dsi_warm_start import (WARM_BASE_VOCAB, WarmStart, dense_retriever,
                                       document_embeddings, require_dual_encoder, row_embeddings,
                                       warm_model, warm_params)
from irjax.jobs.trained_dual_encoder import DualEncoder, load_dual_encoder
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
    # Labelled train queries (0: none) and pseudo queries cut from the corpus (corpus_queries.py),
    # each a kind of the mixture with its weight (indexing's weight is indexing_to_retrieval_ratio).
    retrieval_weight: float = 1.0
    spans_per_doc: int = 0                 # random spans per document (0: none)
    span_length: int = 64                  # words per span
    span_weight: float = 1.0
    sentence_weight: float = 0.0           # > 0: the documents' sentences, with this weight
    sentences_per_doc: int | None = None   # None: every sentence
    title_weight: float = 0.0              # > 0: title -> docid, with this weight

    def corpus_sources(self) -> dict[str, dict[str, Any]]:
        """source -> (options of corpus_queries, weight) for the sources switched on."""
        out: dict[str, dict[str, Any]] = {}
        if self.spans_per_doc > 0 and self.span_weight > 0:
            out["spans"] = {"count": self.spans_per_doc, "length": self.span_length,
                            "weight": self.span_weight}
        if self.sentence_weight > 0:
            out["sentences"] = {"count": self.sentences_per_doc, "weight": self.sentence_weight}
        if self.title_weight > 0:
            out["title"] = {"weight": self.title_weight}
        return out


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


def docid_scheme_for(collection: Collection, workdir: Path, scheme: str,
                     options: Mapping[str, Any], pretrained: str | None,
                     dual_encoder: DualEncoder | None = None) -> DocidScheme:
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
        options["embeddings"] = document_embeddings(collection, dual_encoder, pretrained)
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
    warm_start: WarmStart | None = None,
    dual_encoder: str | None = None,
    evaluate_init: bool = False,
    max_documents: int | None = None,
) -> dict[str, Any]:
    """Trains DSI on `train_split` (indexing the whole corpus) and evaluates on `eval_split`.

    `warm_start`: a MiniLM-encoder model (jobs/dsi_warm_start.py; `t5_preset` is then unused and
    `t5_overrides` may set only 'dtype'); `dual_encoder`: a train_dual_encoder run's checkpoint
    directory (or its workdir), read-only, for warm starts, semantic docids and the dense baseline.
    `max_documents`: the corpus is read streamed and only its first documents are indexed (a
    prefix of a large corpus, e.g. SciFact followed by distractors; the dense baseline searches
    the same prefix).
    """
    check_job_choices("train_dsi", docid_scheme=docid_scheme, t5_preset=t5_preset)
    overrides = dict(t5_overrides or {})
    if warm_start is not None and set(overrides) - {"dtype"}:
        raise ConfigError(f"train_dsi.t5_overrides {sorted(set(overrides) - {'dtype'})} do not "
                          "apply to a warm-started model (its decoder follows the BERT config; "
                          "set WarmStart.decoder_layers / dropout_rate instead)")
    workdir_path = Path(workdir)
    prefix = {} if max_documents is None else {"streamed": True, "max_documents": max_documents}
    train = open_collection(dataset, train_split, data_dir, **prefix)
    evaluation = open_collection(dataset, eval_split, data_dir, **prefix)
    teacher = load_dual_encoder(dual_encoder, pretrained) if dual_encoder else None
    options = dict(scheme_options or {})
    if warm_start is not None and docid_scheme != "naive_string":
        options.setdefault("base_vocab_size", WARM_BASE_VOCAB)
    scheme = docid_scheme_for(train, workdir_path, docid_scheme, options, pretrained, teacher)
    log.info("docids: %s", scheme.describe())

    if warm_start is not None:
        model, tokenizer = warm_model(warm_start, model_vocab_size(scheme), pretrained,
                                      dtype=overrides.get("dtype", "float32"),
                                      label_smoothing=label_smoothing)
        config, name = model.config, f"dsi-minilm-{docid_scheme}"
    else:
        tokenizer = SentencePieceTokenizer()
        config = T5Config.preset(t5_preset, vocab_size=model_vocab_size(scheme), **overrides)
        model, name = Seq2SeqModel(config, label_smoothing=label_smoothing), f"dsi-t5{t5_preset}-{docid_scheme}"

    pseudo = read_pseudo_queries(data.pseudo_queries) if data.pseudo_queries else None
    sources = data.corpus_sources()
    from_corpus = {source: corpus_queries(train, source, seed=data.seed, count=o.get("count"),
                                          length=o.get("length", 64))
                   for source, o in sources.items()}
    for source, queries in from_corpus.items():
        log.info("corpus pseudo queries, %s: %s", source, source_counts(queries))
    mixture = build_dsi_mixture(
        train, scheme, indexing_to_retrieval_ratio=data.indexing_to_retrieval_ratio,
        retrieval_weight=data.retrieval_weight,
        pseudo_queries=pseudo, pseudo_query_weight=data.pseudo_query_weight,
        corpus_queries=from_corpus,
        corpus_query_weights={source: o["weight"] for source, o in sources.items()},
        chunks_per_doc=data.chunks_per_doc, chunk_length=data.inputs_max_length - 1,
        tokenizer=SentencePieceTokenizer() if data.chunks_per_doc > 1 else None, seed=data.seed)
    batches = Seq2SeqBatches(mixture, tokenizer, data.global_batch_size,
                             inputs_max_length=data.inputs_max_length)
    trainer = trainer.resolved(batches.steps_per_epoch)

    import_params = None
    if warm_start is not None:
        require_dual_encoder(warm_start, teacher)
        vectors = row_embeddings(warm_start, train, teacher, pretrained)

        def import_params() -> dict[str, Any]:
            return warm_params(warm_start, model, scheme, train, teacher, vectors, pretrained)
    loop = Trainer(model, workdir_path, trainer, optimizer, import_params=import_params)
    iterator = iter(batches)

    def retriever_for(params: Any) -> GenerativeRetriever:
        return GenerativeRetriever(model, params, scheme, tokenizer, beam_size=beam_size,
                                   batch_size=eval_batch_size,
                                   inputs_max_length=data.inputs_max_length, name=name)

    records = [json.loads(Path(p).read_text()) for p in reference_metrics if Path(p).exists()]
    if evaluate_init:
        state, _, source = loop.initial_state(iterator.example_batch())
        if source != "workdir":  # a resumed run's start is no longer its initialisation
            init = evaluate_on_collection(evaluation, retriever_for(state.params),
                                          workdir_path / "init")
            records.append({**init, "model": f"{name} (step 0)"})
        del state
    result = loop.train(iterator, iterator.example_batch())

    if dense_baseline:
        records.append(evaluate_on_collection(
            evaluation, dense_retriever(teacher, pretrained, warm_queries=True),
            workdir_path / "dense"))
    record = evaluate_on_collection(evaluation, retriever_for(result.params), workdir_path)
    records.append(record)
    write_comparison(workdir_path, records)
    write_training_summary(loop, result, docids=scheme.describe(), t5=config,
                           warm_start=warm_start, dual_encoder=None if teacher is None else
                           {"checkpoint": str(teacher.checkpoint), "step": teacher.step},
                           corpus_queries={s: source_counts(q) for s, q in from_corpus.items()},
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
