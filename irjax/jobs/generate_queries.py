"""Few-shot LM query generation for training data (Promptagator, InPars, DUQGen), then the
dual encoder fine-tuned on it and evaluated:

    corpus --zero-shot MiniLM + k-means--> plan (few-shot examples from distinct clusters,
      documents spread over clusters) --decoder LM, shared few-shot prefix--> generated queries
      --round trip: source document in MiniLM's top `filter_depth`?--> kept flags
      --> pairs.jsonl (+ pseudo_queries.jsonl for DSI) --train_dual_encoder--> metrics.json

Each stage writes one JSONL with a manifest (irjax/data/stage_files.py) and is skipped when its
output is there, intact and made with the same settings; generation is cut into parts of
`documents_per_part` documents, each its own stage, so a killed run loses at most one part.
WORKDIR holds:

    plan.jsonl         the few-shot examples (role 'example') and target documents ('document'),
                       with their clusters
    generate/part-*.jsonl   {"doc_id", "sample", "query", "raw"}; part-*.stats.json its timing
    generated.jsonl    all parts, in plan order
    filtered.jsonl     {"doc_id", "sample", "query", "kept", "rank"}: rank of the source document
                       under the filter's retriever (null: not in its top `filter_depth`)
    pairs.jsonl        the kept rows with a query id: DataConfig.generated_queries reads it
    pseudo_queries.jsonl  {"doc_id", "queries"}: DSIData.pseudo_queries reads it
    generation.json    queries/s, kept fraction, counts, model and every setting
    samples.md         `samples` random (document, query, kept?) rows
    metrics.json, zero_shot/, comparison.md, checkpoints/  from train_dual_encoder (`finetune`)
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irjax.data.collection import Collection
from irjax.data.diverse_sampling import cluster_documents, pick_examples, spread_documents
from irjax.data.fewshot_prompts import FewShotExample, PromptConfig
from irjax.data.generated_queries import QUERY_ID_PREFIX, pseudo_queries, read_generated
from irjax.data.resolve import open_collection
from irjax.data.stage_files import load_stage, write_stage
from irjax.data.training_examples import build_training_pairs
from irjax.decoding.lm_query_generation import LMQueryGenerator, SamplingConfig
from irjax.errors import ConfigError
from irjax.files import atomic_write_text
from irjax.jobs.pair_data import DataConfig
from irjax.jobs.train_dual_encoder import DEFAULT_OPTIMIZER, train_dual_encoder
from irjax.models.dual_encoder import TextEncoder
from irjax.models.weights_dir import gguf_path
from irjax.retrieval.dense import DenseRetriever
from irjax.retrieval.round_trip import keep_flags, round_trip_filter
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """DUQGen's diversity controls: `num_clusters` k-means clusters of the corpus (zero-shot
    MiniLM vectors), `num_examples` few-shot examples from distinct clusters, `max_documents`
    target documents dealt over the clusters (None: the whole corpus), `min_example_words`: only
    labelled queries of at least that many words become examples (the LM copies their form)."""

    num_examples: int = 3
    num_clusters: int = 16
    max_documents: int | None = None
    seed: int = 0
    min_example_words: int = 1

    def fingerprint(self) -> dict[str, Any]:
        """The plan stage's settings; `min_example_words` only when set, so the stages of runs
        made before it existed stay valid."""
        settings = dataclasses.asdict(self)
        if self.min_example_words == 1:
            del settings["min_example_words"]
        return settings


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _lm_file(lm: str) -> Path:
    return Path(lm) if lm.endswith(".gguf") else gguf_path(lm)


def make_plan(corpus: Collection, train: Collection, vectors: np.ndarray,
              plan: PlanConfig) -> list[dict[str, Any]]:
    """The plan's rows: examples from distinct clusters, then the spread target documents."""
    assignments = cluster_documents(vectors, plan.num_clusters, plan.seed)
    labelled: dict[str, list[str]] = {}
    for pair in build_training_pairs(train):
        labelled.setdefault(pair.pos_id, []).append(pair.query)
    doc_ids = list(corpus.doc_ids)
    cluster = dict(zip(doc_ids, assignments.tolist()))
    examples = pick_examples(doc_ids, assignments, labelled, plan.num_examples, plan.seed,
                             plan.min_example_words)
    targets = spread_documents(doc_ids, assignments, plan.max_documents, plan.seed,
                               exclude=[d for d, _ in examples])
    return ([{"role": "example", "doc_id": d, "query": q, "cluster": cluster[d]}
             for d, q in examples] +
            [{"role": "document", "doc_id": d, "cluster": cluster[d]} for d in targets])


def _generate_parts(workdir: Path, generator_factory: Any, targets: list[str],
                    texts: dict[str, str], per_part: int,
                    settings: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every part's rows (reused or generated now) and the timing of the parts made now."""
    rows: list[dict[str, Any]] = []
    made = {"generate_s": 0.0, "rows": 0, "generated_tokens": 0}
    generator = None
    for part, start in enumerate(range(0, len(targets), per_part)):
        docs = targets[start:start + per_part]
        path = workdir / "generate" / f"part-{part:05d}.jsonl"
        part_settings = {**settings, "part": part, "documents": _digest(docs)}
        found = load_stage(path, part_settings)
        if found is None:
            generator = generator or generator_factory()
            before = dict(generator.timings)
            began = time.perf_counter()
            found = generator.generate([(d, texts[d]) for d in docs], batch_number=part)
            seconds = time.perf_counter() - began
            write_stage(path, found, part_settings)
            stats = {"seconds": seconds, "rows": len(found), "documents": len(docs),
                     "generate_s": generator.timings["generate_s"] - before["generate_s"],
                     "generated_tokens": generator.timings["generated_tokens"]
                     - before["generated_tokens"]}
            atomic_write_text(path.with_suffix(".stats.json"), json.dumps(stats) + "\n")
            made["generate_s"] += seconds
            made["rows"] += len(found)
            made["generated_tokens"] += stats["generated_tokens"]
            log.info("generated part %d (%d documents, %d queries) in %.1f s", part, len(docs),
                     len(found), seconds)
        rows.extend(found)
    return rows, made


def _samples_markdown(rows: Sequence[dict[str, Any]], texts: dict[str, str], name: str,
                      count: int, seed: int, snippet_chars: int = 400) -> str:
    picked = np.random.default_rng(seed).permutation(len(rows))[:count]
    out = [f"# Generated queries: {name}\n",
           f"{len(picked)} random rows of filtered.jsonl (document snippet, generated query, "
           "kept by the round-trip filter?).\n"]
    for i, row in enumerate(rows[int(j)] for j in sorted(picked)):
        text = texts[row["doc_id"]]
        snippet = text[:snippet_chars] + ("…" if len(text) > snippet_chars else "")
        out.append(f"## {i + 1}. {row['doc_id']}\n\n> {snippet}\n\n"
                   f"- query: `{row['query']}`\n- kept: {'yes' if row['kept'] else 'no'} "
                   f"(source rank {row['rank'] if row['rank'] is not None else '> depth'})\n")
    return "\n".join(out)


def generate_queries(
    dataset: str,
    workdir: str,
    lm: str = "smollm2-135m-instruct",
    eval_split: str = "test",
    train_split: str = "train",
    plan: PlanConfig = PlanConfig(),
    prompt: PromptConfig = PromptConfig(),
    sampling: SamplingConfig = SamplingConfig(),
    chat: str | None = None,
    documents_per_part: int = 64,
    filter_depth: int = 1,
    samples: int = 20,
    finetune: bool = True,
    data: DataConfig = DataConfig(labelled_pairs=False, generated_queries="pairs.jsonl"),
    trainer: TrainerConfig = TrainerConfig(checkpoint_every=100, log_every=10),
    optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    pretrained: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Generates, filters and writes training pairs, then (with `finetune`) trains and evaluates
    MiniLM on them (module docstring). `lm`: a fetched model's name or a .gguf path; `chat`:
    'chatml'/'none', None to follow the GGUF's chat template. `data.generated_queries` is
    replaced by WORKDIR/pairs.jsonl."""
    if documents_per_part < 1:
        raise ConfigError(f"documents_per_part must be >= 1, got {documents_per_part}")
    if filter_depth < 1:
        raise ConfigError(f"filter_depth must be >= 1, got {filter_depth}")
    workdir_path = Path(workdir)
    lm_file = _lm_file(lm)
    train = open_collection(dataset, train_split, data_dir)
    texts = {d.doc_id: d.contents for d in train.documents}
    zero_shot = DenseRetriever(TextEncoder.from_pretrained(pretrained), index="exact")

    plan_settings = {"plan": plan.fingerprint(), "corpus": train.fingerprint(),
                     "train_split": train_split, "encoder": zero_shot.encoder.fingerprint}
    plan_rows = load_stage(workdir_path / "plan.jsonl", plan_settings)
    if plan_rows is None:
        plan_rows = make_plan(train, train, zero_shot.encode_corpus(train), plan)
        write_stage(workdir_path / "plan.jsonl", plan_rows, plan_settings)
    examples = [FewShotExample(r["doc_id"], texts[r["doc_id"]], r["query"])
                for r in plan_rows if r["role"] == "example"]
    targets = [r["doc_id"] for r in plan_rows if r["role"] == "document"]
    log.info("plan: %d few-shot examples from clusters %s, %d documents to generate for",
             len(examples), [r["cluster"] for r in plan_rows if r["role"] == "example"],
             len(targets))

    gen_settings = {**plan_settings, "plan_rows": _digest(plan_rows), "lm": lm_file.name,
                    "lm_dir": lm_file.parent.name, "prompt": dataclasses.asdict(prompt),
                    "sampling": dataclasses.asdict(sampling), "chat": chat,
                    "documents_per_part": documents_per_part}
    started = time.perf_counter()
    loaded: dict[str, float] = {}

    def factory() -> LMQueryGenerator:
        began = time.perf_counter()
        generator = LMQueryGenerator.from_gguf(lm_file, prompt, examples, sampling, chat=chat)
        loaded["load_s"] = time.perf_counter() - began
        loaded["prefix_tokens"] = len(generator._prefix_ids)
        log.info("%s loaded in %.1f s; chat format %r; few-shot prefix %d tokens", lm,
                 loaded["load_s"], generator.prompt.config.chat, len(generator._prefix_ids))
        return generator

    generated = load_stage(workdir_path / "generated.jsonl", gen_settings)
    made: dict[str, float] = {}
    if generated is None:
        generated, made = _generate_parts(workdir_path, factory, targets, texts,
                                          documents_per_part, gen_settings)
        write_stage(workdir_path / "generated.jsonl", generated, gen_settings)

    filter_settings = {**gen_settings, "filter_depth": filter_depth, "retriever": zero_shot.name}
    filtered = load_stage(workdir_path / "filtered.jsonl", filter_settings)
    if filtered is None:
        asked = {f"g{i}": r for i, r in enumerate(generated) if r["query"]}
        began = time.perf_counter()
        ranks = round_trip_filter(zero_shot, train, {q: r["query"] for q, r in asked.items()},
                                  {q: r["doc_id"] for q, r in asked.items()}, filter_depth) \
            if asked else {}
        loaded["filter_s"] = time.perf_counter() - began
        kept = keep_flags(ranks, filter_depth)
        filtered = [{"doc_id": r["doc_id"], "sample": r["sample"], "query": r["query"],
                     "kept": kept.get(f"g{i}", False), "rank": ranks.get(f"g{i}")}
                    for i, r in enumerate(generated)]
        write_stage(workdir_path / "filtered.jsonl", filtered, filter_settings)

    pairs_path = workdir_path / "pairs.jsonl"
    pairs = load_stage(pairs_path, filter_settings)
    if pairs is None:
        pairs = [{"query_id": f"{QUERY_ID_PREFIX}{n}", "doc_id": r["doc_id"],
                  "query": r["query"], "kept": True}
                 for n, r in enumerate(r for r in filtered if r["kept"])]
        write_stage(pairs_path, pairs, filter_settings)
    dsi = pseudo_queries(read_generated(pairs_path)) if pairs else {}
    atomic_write_text(workdir_path / "pseudo_queries.jsonl", "".join(
        json.dumps({"doc_id": d, "queries": q}, ensure_ascii=False) + "\n" for d, q in dsi.items()))

    previous = workdir_path / "generation.json"
    if previous.exists():  # reused stages keep the load/filter timings of the run that made them
        with contextlib.suppress(ValueError, KeyError, TypeError):
            loaded = {**json.loads(previous.read_text())["load_and_filter"], **loaded}
    summary = _summary(workdir_path, generated, filtered, made, loaded, gen_settings,
                       filter_depth, time.perf_counter() - started)
    atomic_write_text(workdir_path / "generation.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(workdir_path / "samples.md", _samples_markdown(
        filtered, texts, f"{lm} on {train.name}", samples, plan.seed))
    log.info("generation: %s", {k: summary[k] for k in ("queries", "kept", "kept_fraction",
                                                          "queries_per_s")})
    if not finetune:
        return summary
    if not pairs and not data.labelled_pairs:
        raise ConfigError("the round-trip filter kept no generated query, so there is nothing to "
                          "fine-tune on: raise filter_depth or generate for more documents")
    data = dataclasses.replace(data, generated_queries=str(pairs_path) if pairs else None)
    return train_dual_encoder(dataset, workdir, eval_split=eval_split, train_split=train_split,
                              data=data, trainer=trainer, optimizer=optimizer,
                              pretrained=pretrained, data_dir=data_dir)


def _summary(workdir: Path, generated: list[dict[str, Any]], filtered: list[dict[str, Any]],
             made: dict[str, float], loaded: dict[str, float], settings: dict[str, Any],
             depth: int, seconds: float) -> dict[str, Any]:
    """generation.json: rates from the part stats (all parts, whenever they were made)."""
    stats = [json.loads(p.read_text()) for p in sorted((workdir / "generate").glob("*.stats.json"))]
    rows = sum(s["rows"] for s in stats)
    spent = sum(s["seconds"] for s in stats)
    nonempty = [r for r in filtered if r["query"]]
    kept = sum(r["kept"] for r in filtered)
    return {
        "queries": len(generated), "documents": len({r["doc_id"] for r in generated}),
        "empty_queries": len(generated) - len(nonempty), "kept": kept,
        "kept_fraction": kept / max(len(nonempty), 1), "filter_depth": depth,
        "queries_per_s": rows / spent if spent else None,
        # parts after the first: without the model's compilation (same shapes reuse it)
        "queries_per_s_after_first_part": (sum(s["rows"] for s in stats[1:]) /
                                           sum(s["seconds"] for s in stats[1:]))
        if len(stats) > 1 else None,
        "generation_seconds": spent, "generated_tokens": sum(s["generated_tokens"] for s in stats),
        "generated_this_run": made, "load_and_filter": loaded, "job_seconds": seconds,
        "settings": settings,
    }
