"""The SPLADE training job: a BertForMaskedLM checkpoint (SPLADE-tiny, or an encoder given a fresh
tied MLM head) fine-tuned on a collection's judged pairs (+ BM25 hard negatives) with the
contrastive loss and FLOPS regularisation, then evaluated like `gin/eval/splade_tiny.gin`.

`query_side='idf'` trains the inference-free variant (document encoder only, IDF queries,
IDF-aware FLOPS). Writes WORKDIR/metrics.json (the fine-tuned model on the eval split, with the
sparse index's bytes_per_doc and query encoding time), WORKDIR/zero_shot/metrics.json (the
starting checkpoint, same query side) and WORKDIR/comparison.md; curves in WORKDIR/metrics.jsonl.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from irjax.data.numbered import NumberedBatches
from irjax.data.resolve import open_collection
from irjax.data.tokenization import WordPieceTokenizer
from irjax.evaluation.evaluate import evaluate_on_collection, periodic_evaluation
from irjax.jobs.choices import check_job_choices
from irjax.jobs.pair_data import DataConfig, training_batches
from irjax.jobs.summary import write_comparison, write_training_summary
from irjax.models.pretrained import MINILM_NAME, find_minilm_dir
from irjax.models.splade import SpladeEncoder
from irjax.models.splade_import import find_weights, load_splade_params
from irjax.models.splade_training import SpladeModel
from irjax.parallel.partitioning import create_mesh
from irjax.retrieval.sparse import SpladeRetriever, corpus_idf
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer import Trainer
from irjax.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = OptimizerConfig(learning_rate=2e-5, warmup_fraction=0.1, decay="linear",
                                    weight_decay=0.01)


def train_splade(
    dataset: str,
    workdir: str,
    eval_split: str = "test",
    train_split: str = "train",
    weights: str = "splade-tiny",
    fresh_head: bool = False,
    fresh_head_bias: float = 0.0,
    query_side: str = "splade",
    lambda_q: float = 3e-4,
    lambda_d: float = 1e-4,
    lambda_warmup_steps: int = 0,
    data: DataConfig = DataConfig(),
    trainer: TrainerConfig = TrainerConfig(checkpoint_every=100, log_every=10),
    optimizer: OptimizerConfig = DEFAULT_OPTIMIZER,
    index: str = "exact",
    index_options: dict[str, Any] | None = None,
    eval_doc_max_length: int = 256,
    eval_query_max_length: int = 64,
    evaluate_zero_shot: bool = True,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Fine-tunes SPLADE (or its inference-free variant) and evaluates it on `eval_split`.

    `weights`: a folder or a name under $IRJAX_WEIGHTS_DIR ('splade-tiny'), or
    'all-MiniLM-L6-v2' (the installed sentence-transformers encoder; it has no MLM head, so
    `fresh_head=True` is required: tied to its word embeddings, zero bias, or `fresh_head_bias`
    for every term, negative to start from sparse vectors: see irjax.models.splade_import)."""
    check_job_choices("train_splade", query_side=query_side, index=index)
    directory = find_minilm_dir() if weights == MINILM_NAME else find_weights(weights)
    config, pretrained = load_splade_params(directory, fresh_head=fresh_head,
                                            fresh_head_bias=fresh_head_bias)
    tokenizer = WordPieceTokenizer(directory)
    train = open_collection(dataset, train_split, data_dir)
    evaluation = open_collection(dataset, eval_split, data_dir)
    idf = None
    if query_side == "idf":  # the IDF the evaluation will use when the corpus is the same
        idf = corpus_idf(tokenizer, [d.contents for d in train.documents], eval_doc_max_length)
    special = tuple(int(i) for i in (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id))

    batches = training_batches(train, tokenizer, data)
    trainer = trainer.resolved(batches.steps_per_epoch)
    mesh = create_mesh(*trainer.mesh_shape)
    model = SpladeModel(config, query_side=query_side, idf=idf, special_ids=special,
                        lambda_q=lambda_q, lambda_d=lambda_d,
                        lambda_warmup_steps=lambda_warmup_steps)
    workdir_path = Path(workdir)
    base = directory.parent.name if directory.name == "model" else directory.name
    if weights == MINILM_NAME:
        base = MINILM_NAME

    def retriever_for(params: Any, name: str) -> SpladeRetriever:
        return SpladeRetriever(SpladeEncoder(config), params["splade"], tokenizer, name,
                               query_side, index, index_options, eval_doc_max_length,
                               eval_query_max_length)

    finetuned = f"{base}-{query_side}-finetuned"
    loop = Trainer(
        model, workdir_path, trainer, optimizer, mesh=mesh,
        evaluate=periodic_evaluation(evaluation, lambda p: retriever_for(p, finetuned),
                                     workdir_path / "eval") if trainer.eval_every else None,
        import_params=lambda: model.from_pretrained_params(pretrained),
    )
    iterator = NumberedBatches(iter(batches))
    result = loop.train(iterator, iterator.example_batch())

    records = []
    if evaluate_zero_shot:
        records.append(evaluate_on_collection(
            evaluation, retriever_for(model.from_pretrained_params(pretrained), f"{base}-{query_side}"),
            workdir_path / "zero_shot"))
    records.append(evaluate_on_collection(evaluation, retriever_for(result.params, finetuned),
                                          workdir_path))
    write_comparison(workdir_path, records)
    write_training_summary(loop, result, data=data, splade={
        "weights": str(directory), "fresh_head": fresh_head,
        "fresh_head_bias": fresh_head_bias, "query_side": query_side,
        "lambda_q": lambda_q, "lambda_d": lambda_d, "lambda_warmup_steps": lambda_warmup_steps,
        "idf_mean": None if idf is None else float(np.mean(idf))})
    return records[-1]
