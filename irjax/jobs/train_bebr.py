"""The BEBR job: a frozen dual encoder's float vectors -> train the recurrent binariser through the
shared Trainer -> a bits index (round-weighted Hamming) with float re-ranking of the top N.

The training pairs are the train split's judged (query, document) pairs, embedded by the frozen
encoder; negatives are in-batch plus hard negatives from exact float search's top ranks. With
`corpus_weight`, each step also draws `corpus_rows_per_query` random corpus vectors per batch
row (global batch x that many in all), whose float
neighbourhoods the codes are distilled to keep (irjax/models/bebr.py).

Writes WORKDIR/metrics.json (bits + float rerank of the top `rerank`, with `bytes_per_doc` and the
search timing), WORKDIR/float32/ (exact float32 search of the same encoder, the reference),
WORKDIR/bits_only/ (the bits without re-ranking) and WORKDIR/comparison.md; the index is saved to
WORKDIR/index.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from irjax.data.resolve import open_collection
from irjax.data.training_examples import build_training_pairs
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.index.bebr_index import BEBRIndex
from irjax.index.exact import ExactIndex
from irjax.jobs.code_training import (MappedIterator, add_to_metrics, corpus_rows,
                                      index_negatives, pair_batches, same_corpus, start_encoder)
from irjax.jobs.summary import write_comparison, write_training_summary
from irjax.models.bebr import BEBRModel
from irjax.parallel.partitioning import create_mesh
from irjax.retrieval.prebuilt import PrebuiltIndexRetriever
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer import Trainer
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = OptimizerConfig(learning_rate=1e-3, warmup_fraction=0.05, decay="cosine")


def train_bebr(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    dual_encoder: str | None = None,
    pretrained: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    rounds: int = 4,
    bits_per_round: int = 128,
    rerank: int | None = 100,
    global_batch_size: int = 64,
    num_hard_negatives: int = 3,
    hard_negative_depth: int = 100,
    hard_negative_skip: int = 3,
    temperature: float = 0.05,
    reconstruction_weight: float = 1.0,
    distill_weight: float = 0.0,
    corpus_weight: float = 1.0,
    corpus_rows_per_query: int = 4,
    trainer: TrainerConfig = TrainerConfig(num_epochs=30, checkpoint_every=200, log_every=20),
    optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    seed: int = 0,
) -> dict[str, Any]:
    """Trains the binariser on `dual_encoder`'s vectors (a train_dual_encoder run's workdir or
    checkpoints; None: the pretrained encoder) and evaluates it on `eval_split`."""
    workdir_path = Path(workdir)
    train = open_collection(dataset, train_split, data_dir)
    evaluation = open_collection(dataset, eval_split, data_dir)
    same_corpus(train, evaluation)
    start = start_encoder(dual_encoder, pretrained)
    model = BEBRModel(start.encoder.dim, rounds=rounds, bits_per_round=bits_per_round,
                      temperature=temperature, reconstruction_weight=reconstruction_weight,
                      distill_weight=distill_weight, corpus_weight=corpus_weight)

    float_retriever = start.retriever(cache_dir)
    records = [evaluate_on_collection(evaluation, float_retriever, workdir_path / "float32")]
    vectors = float_retriever.encode_corpus(evaluation)
    train_queries = {pair.qid: pair.query for pair in build_training_pairs(train)}
    query_vectors = start.encoder.encode(list(train_queries.values()))
    exact = ExactIndex().build(vectors, evaluation.doc_ids)
    negatives = index_negatives(train, query_vectors, list(train_queries), exact,
                                hard_negative_depth, hard_negative_skip)
    batches, batch_query_ids = pair_batches(train, start.tokenizer, global_batch_size,
                                            num_hard_negatives, negatives, 8, seed)
    position = {qid: i for i, qid in enumerate(train_queries)}
    batch_queries = query_vectors[[position[q] for q in batch_query_ids]]
    batch_docs = vectors[corpus_rows(batches, evaluation)]

    def with_vectors(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: batch[k] for k in ("labels", "logit_mask")}
        out["query_vectors"] = batch_queries[batch["query_index"]]
        out["pos_vectors"] = batch_docs[batch["pos_doc_index"]]
        if "neg_doc_index" in batch:
            out["neg_vectors"] = batch_docs[batch["neg_doc_index"]]
        if corpus_weight:  # random corpus rows, a function of the batch (so resumes repeat them)
            rng = np.random.default_rng([seed, *batch["query_index"].tolist()])
            count = len(batch["labels"]) * corpus_rows_per_query
            rows = rng.choice(len(vectors), count, replace=len(vectors) < count)
            out["corpus_vectors"] = vectors[rows].reshape(len(batch["labels"]), -1, vectors.shape[1])
        return out

    iterator = MappedIterator(batches, with_vectors)
    trainer = trainer.resolved(batches.steps_per_epoch)
    loop = Trainer(model, workdir_path, trainer, optimizer, mesh=create_mesh(*trainer.mesh_shape))
    result = loop.train(iterator, iterator.example_batch())
    binarizer = model.export(result.params)

    for name, depth in (("bits_only", None), ("", rerank)):
        clock = time.perf_counter()
        index = BEBRIndex(rerank=depth, binarizer=binarizer).build(vectors, evaluation.doc_ids)
        build_s = time.perf_counter() - clock
        label = f"{start.name}+bebr{index.bytes_per_doc}B" + (f"+rerank{depth}" if depth else "")
        target = workdir_path / name if name else workdir_path
        record = evaluate_on_collection(evaluation, PrebuiltIndexRetriever(
            start.encoder, index, label, build_s), target)
        records.append(add_to_metrics(target, record, bytes_per_doc=index.bytes_per_doc,
                                      rerank=depth))
    index.save(workdir_path / "index")
    write_comparison(workdir_path, records)
    write_training_summary(loop, result)
    return records[-1]
