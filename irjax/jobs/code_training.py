"""What the learned-code jobs (train_jpq, train_bebr) share: the frozen starting encoder, its
corpus vectors and float32 baseline, hard negatives from an index's top ranks, the dual-encoder
batch plan with documents replaced by corpus rows' codes or vectors, and metrics.json with the
bytes per document searched.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from irjax.data.collection import Collection
from irjax.data.pipeline import DualEncoderBatches
from irjax.data.tokenization import WordPieceTokenizer
from irjax.data.training_examples import build_training_pairs
from irjax.errors import ConfigError
from irjax.files import atomic_write_text
from irjax.index.base import Index
from irjax.jobs.trained_dual_encoder import EMBEDDING_MAX_LENGTH, load_dual_encoder
from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.dual_encoder import TextEncoder
from irjax.models.pretrained import load_checkpoint
from irjax.parallel.fingerprint import params_digest
from irjax.retrieval.dense import DenseRetriever

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StartEncoder:
    """The dual encoder JPQ / BEBR start from: pretrained (zero-shot) or a fine-tuned run's."""

    encoder: TextEncoder          # one tower: the fine-tuned runs share query and doc towers
    config: BertConfig
    tokenizer: WordPieceTokenizer
    pooling: str
    name: str

    def retriever(self, cache_dir: str | None) -> DenseRetriever:
        """Exact float32 search over the corpus (vectors cached in `cache_dir`, default
        $IRJAX_CACHE_DIR/embeddings, shared with every job that encodes with this encoder)."""
        return DenseRetriever(self.encoder, index="exact", cache_dir=cache_dir,
                              name=f"{self.name}+exact")

    def with_params(self, params: Any, name: str) -> TextEncoder:
        """The same architecture with other (e.g. JPQ-trained query tower) parameters."""
        return TextEncoder(BertEncoder(self.config), params, self.tokenizer, name=name,
                           max_length=EMBEDDING_MAX_LENGTH, pooling=self.pooling,
                           fingerprint_parts=(f"params:{params_digest(params)}",))


def start_encoder(dual_encoder: str | None, pretrained: str | None) -> StartEncoder:
    """A fine-tuned train_dual_encoder run's encoder (its checkpoints directory or workdir), or
    the pretrained one when `dual_encoder` is None."""
    checkpoint = load_checkpoint(pretrained)
    config = BertConfig.from_json(checkpoint.config_path)
    tokenizer = WordPieceTokenizer(checkpoint.directory)
    if dual_encoder is None:  # fingerprinted by its weights file, as every zero-shot run
        encoder = TextEncoder.from_pretrained(pretrained, max_length=EMBEDDING_MAX_LENGTH)
        return StartEncoder(encoder, config, tokenizer, checkpoint.pooling, checkpoint.name)
    loaded = load_dual_encoder(dual_encoder, pretrained)
    if not loaded.model.shared_towers:
        raise ConfigError(f"{dual_encoder} has separate query and document towers; JPQ and "
                          "BEBR here start from a shared-tower dual encoder")
    params = loaded.encoder_params
    encoder = TextEncoder(BertEncoder(config), params, tokenizer, name=loaded.name,
                          max_length=EMBEDDING_MAX_LENGTH, pooling=checkpoint.pooling,
                          fingerprint_parts=(f"params:{params_digest(params)}",))
    return StartEncoder(encoder, config, tokenizer, checkpoint.pooling, loaded.name)


def same_corpus(train: Collection, evaluation: Collection) -> None:
    """Codes are built once over the corpus, so both splits must share it (BEIR splits do)."""
    if train.fingerprint() != evaluation.fingerprint():
        raise ConfigError(f"{train.name}/{train.split} and {evaluation.name}/{evaluation.split} "
                          "have different corpora; the document codes are built over one corpus "
                          "that both the training and the evaluation split must share")


def index_negatives(train: Collection, query_vectors: np.ndarray, query_ids: list[str],
                    index: Index, depth: int, skip: int) -> dict[str, list[str]]:
    """Per training query, the non-relevant documents among `index`'s top ranks, after skipping
    the first `skip` of them (likely unjudged positives); what JPQ samples its negatives from."""
    relevant = {q: {d for d, g in docs.items() if g > 0} for q, docs in train.qrels.items()}
    k = min(len(index), depth + skip + max((len(r) for r in relevant.values()), default=0))
    result = index.search(query_vectors, k)
    out = {}
    for qid, ranked in zip(query_ids, result.ids):
        kept = [d for d in ranked if d not in relevant.get(qid, set())]
        out[qid] = kept[skip:skip + depth]
    return out


def pair_batches(train: Collection, tokenizer: WordPieceTokenizer, global_batch_size: int,
                 num_hard_negatives: int, hard_negatives: Mapping[str, list[str]] | None,
                 query_max_length: int, seed: int) -> tuple[DualEncoderBatches, list[str]]:
    """The dual encoder's batch plan over `train`'s judged pairs (in-batch + hard negatives, false
    negatives masked), and its query ids. Documents are turned into codes or vectors by
    `MappedIterator`; their tokens are never read, so they are cut to [CLS] [SEP]."""
    pairs = build_training_pairs(train)
    documents = {d.doc_id: d.contents for d in train.documents} if num_hard_negatives else None
    batches = DualEncoderBatches(pairs, tokenizer, global_batch_size,
                                 query_max_length=query_max_length, doc_max_length=2,
                                 num_hard_negatives=num_hard_negatives,
                                 hard_negatives=hard_negatives, documents=documents, seed=seed)
    return batches, list(batches.query_ids)


class MappedIterator:
    """A resumable batch iterator with `fn` applied to each batch; the position is the inner
    iterator's, so the trainer checkpoints and resumes it as usual."""

    def __init__(self, batches: DualEncoderBatches,
                 fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
        self.batches, self.fn = batches, fn
        self._inner = iter(batches)

    def __iter__(self) -> "MappedIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return self.fn(next(self._inner))

    def get_state(self) -> dict[str, Any]:
        return self._inner.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._inner.set_state(state)

    def example_batch(self) -> dict[str, np.ndarray]:
        return self.fn(self.batches.example_batch())


def corpus_rows(batches: DualEncoderBatches, collection: Collection) -> np.ndarray:
    """For each document of the batch plan's table (`batches.doc_ids`), its corpus row."""
    row = {doc_id: i for i, doc_id in enumerate(collection.doc_ids)}
    missing = [d for d in batches.doc_ids if d not in row]
    if missing:
        raise ConfigError(f"training documents {missing[:5]} are not in {collection.name}'s corpus")
    return np.array([row[d] for d in batches.doc_ids], dtype=np.int64)


def add_to_metrics(workdir: Path, record: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """`record` (evaluate_on_collection's) with `fields` added, rewritten to metrics.json."""
    record = {**record, **fields}
    atomic_write_text(workdir / "metrics.json", json.dumps(record, indent=2) + "\n")
    return record
