"""The JPQ job: a dual encoder's corpus vectors -> faiss PQ (codes fixed) -> train the query
tower and the centroids through the shared Trainer -> search the codes with the trained centroids.

Hard negatives come from the *starting* PQ index's top ranks (the starting query encoder against
faiss's centroids), computed once before training; JPQ refreshes them from the current index as it
trains, which this job does not (static negatives, sampled per step as the dual encoder's).

Writes WORKDIR/metrics.json (the trained query tower + PQ index with trained centroids, with
`bytes_per_doc` and the search timing), WORKDIR/float32/ (exact float32 search of the starting
encoder, the reference), WORKDIR/pq_start/ (the starting encoder with faiss's centroids: post-hoc
PQ) and WORKDIR/comparison.md; the trained index is saved to WORKDIR/index.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from irjax.data.resolve import open_collection
from irjax.data.training_examples import build_training_pairs
from irjax.evaluation.evaluate import evaluate_on_collection
from irjax.index.pq_codes import PQCodesIndex, faiss_pq
from irjax.jobs.code_training import (MappedIterator, add_to_metrics, corpus_rows,
                                      index_negatives, pair_batches, same_corpus, start_encoder)
from irjax.jobs.summary import write_comparison, write_training_summary
from irjax.models.jpq import JPQModel
from irjax.parallel.partitioning import create_mesh
from irjax.retrieval.prebuilt import PrebuiltIndexRetriever
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer import Trainer
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)

DEFAULT_ENCODER_OPTIMIZER = OptimizerConfig(learning_rate=5e-6, warmup_fraction=0.1,
                                            decay="linear")
DEFAULT_CENTROID_OPTIMIZER = OptimizerConfig(learning_rate=1e-4, warmup_fraction=0.1,
                                             decay="linear")


def train_jpq(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    dual_encoder: str | None = None,
    pretrained: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    pq_subspaces: int = 48,
    global_batch_size: int = 32,
    query_max_length: int = 64,
    num_hard_negatives: int = 1,
    hard_negative_depth: int = 100,
    hard_negative_skip: int = 3,
    temperature: float = 0.05,
    trainer: TrainerConfig = TrainerConfig(num_epochs=3, checkpoint_every=50, log_every=5),
    encoder_optimizer: OptimizerConfig = DEFAULT_ENCODER_OPTIMIZER,
    centroid_optimizer: OptimizerConfig = DEFAULT_CENTROID_OPTIMIZER,
    seed: int = 0,
) -> dict[str, Any]:
    """Trains JPQ from `dual_encoder` (a train_dual_encoder run's workdir or checkpoints; None:
    the pretrained encoder) and evaluates it on `eval_split` (module docstring)."""
    workdir_path = Path(workdir)
    train = open_collection(dataset, train_split, data_dir)
    evaluation = open_collection(dataset, eval_split, data_dir)
    same_corpus(train, evaluation)
    start = start_encoder(dual_encoder, pretrained)
    model = JPQModel(start.config, pq_subspaces=pq_subspaces, temperature=temperature,
                     pooling=start.pooling)

    float_retriever = start.retriever(cache_dir)
    records = [evaluate_on_collection(evaluation, float_retriever, workdir_path / "float32")]
    vectors = float_retriever.encode_corpus(evaluation)
    clock = time.perf_counter()
    centroids, codes = faiss_pq(vectors, pq_subspaces)
    index = PQCodesIndex.from_codes(centroids, codes, evaluation.doc_ids)
    build_s = time.perf_counter() - clock
    log.info("faiss PQ: %d sub-spaces x 256 centroids over %d vectors in %.1f s", pq_subspaces,
             len(vectors), build_s)
    start_pq = PrebuiltIndexRetriever(start.encoder, index, f"{start.name}+pq{pq_subspaces}",
                                      build_s)
    record = evaluate_on_collection(evaluation, start_pq, workdir_path / "pq_start")
    records.append(add_to_metrics(workdir_path / "pq_start", record,
                                  bytes_per_doc=index.bytes_per_doc))

    train_queries = {pair.qid: pair.query for pair in build_training_pairs(train)}
    negatives = index_negatives(train, start.encoder.encode(list(train_queries.values())),
                                list(train_queries), index, hard_negative_depth,
                                hard_negative_skip)
    batches, _ = pair_batches(train, start.tokenizer, global_batch_size, num_hard_negatives,
                              negatives, query_max_length, seed)
    doc_codes = codes[corpus_rows(batches, evaluation)].astype(np.int32)

    def with_codes(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: batch[k] for k in ("query_ids", "query_mask", "labels", "logit_mask")}
        out["pos_codes"] = doc_codes[batch["pos_doc_index"]]
        if "neg_doc_index" in batch:
            out["neg_codes"] = doc_codes[batch["neg_doc_index"]]
        return out

    iterator = MappedIterator(batches, with_codes)
    trainer = trainer.resolved(batches.steps_per_epoch)
    tx, learning_rate_fn = _optimizer(encoder_optimizer, centroid_optimizer, trainer.num_steps)
    loop = Trainer(model, workdir_path, trainer, tx, learning_rate_fn=learning_rate_fn,
                   mesh=create_mesh(*trainer.mesh_shape),
                   import_params=lambda: {"query_encoder": start.encoder.params,
                                          "centroids": centroids})
    result = loop.train(iterator, iterator.example_batch())

    params = jax.device_get(result.params)
    trained = index.with_centroids(np.asarray(params["centroids"], np.float32))
    trained.save(workdir_path / "index")
    query_encoder = start.with_params(params["query_encoder"], f"{start.name}-jpq")
    retriever = PrebuiltIndexRetriever(query_encoder, trained,
                                       f"{start.name}-jpq+pq{pq_subspaces}", build_s)
    record = evaluate_on_collection(evaluation, retriever, workdir_path)
    records.append(add_to_metrics(workdir_path, record, bytes_per_doc=trained.bytes_per_doc,
                                  hard_negatives="static, from the starting PQ index's top ranks"))
    write_comparison(workdir_path, records)
    write_training_summary(loop, result)
    return records[-1]


def _optimizer(encoder: OptimizerConfig, centroids: OptimizerConfig, num_steps: int
               ) -> tuple[optax.GradientTransformation, Any]:
    """The query tower and the centroids each with their own AdamW schedule (JPQ trains the
    centroids with a larger rate); the encoder's rate is the one logged."""
    encoder, centroids = encoder.resolved(num_steps), centroids.resolved(num_steps)
    tx = optax.multi_transform(
        {"encoder": encoder.build(), "centroids": centroids.build()},
        lambda params: {name: jax.tree.map(lambda _: "encoder" if name == "query_encoder"
                                           else "centroids", tree)
                        for name, tree in params.items()})
    return tx, encoder.learning_rate_at
