"""What DSI borrows from dual encoders: a fine-tuned dual encoder (jobs/trained_dual_encoder.py),
its document embeddings (semantic docids, output rows) and its dense retriever (the baseline in
the same run), and the warm-started generative model built on MiniLM (models/warm_start.py).

`WarmStart` is the gin-bound setting of train_dsi: with it, DSI is a `WarmSeq2SeqModel` whose
encoder starts from MiniLM's weights ('minilm') or from the fine-tuned dual encoder's
('dual_encoder'), whose decoder is trained from scratch, and -- with `output_rows` -- whose
docid output rows start at the dual encoder's document embeddings with the decoder set to pool,
so that the untrained model already ranks as the dual encoder does.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from irjax.choices import check_choice
from irjax.data.collection import Collection
from irjax.data.docids import DocidScheme
from irjax.data.tokenization import WordPieceTokenizer
from irjax.errors import ConfigError
from irjax.jobs.trained_dual_encoder import EMBEDDING_MAX_LENGTH, DualEncoder
from irjax.models.bert import BertConfig
from irjax.models.dual_encoder import TextEncoder
from irjax.models.hf_import import load_bert_params
from irjax.models.pretrained import load_checkpoint
from irjax.models.warm_start import (WarmSeq2SeqModel, docid_output_rows, warm_decoder_config,
                                     warm_start_params)
from irjax.retrieval.dense import DenseRetriever

ENCODER_INITS = ("minilm", "dual_encoder")
# A warm-started decoder never writes text, so new docid tokens (atomic, semantic) start right after
# pad/start (0) and EOS (1) instead of after T5's 32,128 SentencePiece ids: the output layer is
# the corpus's rows, not 32k unused ones (6x fewer output FLOPs per step on SciFact).
WARM_BASE_VOCAB = 2


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """A BERT-encoder DSI model (see the module docstring).

    encoder          'minilm' (pretrained all-MiniLM-L6-v2) or 'dual_encoder' (the encoder of
                     train_dsi.dual_encoder, the fine-tuned dual encoder)
    output_rows      start as the dual encoder: docid output rows from its document embeddings
                     (the fine-tuned one when train_dsi.dual_encoder is set, else zero-shot
                     MiniLM) and the decoder set to mean-pool; False: fresh decoder and rows
    decoder_layers   T5 decoder layers (d_model = the BERT hidden size)
    temperature      the dual encoder's softmax temperature; start logits are cos / temperature
    dropout_rate     decoder dropout (the BERT encoder keeps its own, 0.1 for MiniLM)
    """

    encoder: str = "dual_encoder"
    output_rows: bool = True
    decoder_layers: int = 2
    temperature: float = 0.05
    dropout_rate: float = 0.1

    def __post_init__(self) -> None:
        check_choice("WarmStart.encoder", self.encoder, ENCODER_INITS)
        if self.decoder_layers < 1 or self.temperature <= 0:
            raise ValueError(f"WarmStart needs decoder_layers >= 1 and temperature > 0, got "
                             f"{self.decoder_layers} and {self.temperature}")


def dense_retriever(dual_encoder: DualEncoder | None, pretrained: str | None,
                    cache_dir: str | None = None, warm_queries: bool = False) -> DenseRetriever:
    """An exact dense retriever over the fine-tuned dual encoder when there is one, else over the
    pretrained (zero-shot) encoder; corpus vectors cached on disk."""
    if dual_encoder is not None:
        return dual_encoder.retriever(cache_dir, warm_queries)
    encoder = TextEncoder.from_pretrained(pretrained, max_length=EMBEDDING_MAX_LENGTH)
    return DenseRetriever(encoder, index="exact", cache_dir=cache_dir, warm_queries=warm_queries)


def document_embeddings(collection: Collection, dual_encoder: DualEncoder | None,
                        pretrained: str | None = None, cache_dir: str | None = None) -> np.ndarray:
    """Document vectors [num_documents, d] in corpus order, from `dense_retriever`: what semantic
    docids cluster and output rows start from."""
    return dense_retriever(dual_encoder, pretrained, cache_dir).encode_corpus(collection)


def require_dual_encoder(warm: WarmStart, dual_encoder: DualEncoder | None) -> None:
    """Fails (before any work) when the warm start needs a dual encoder that was not given."""
    if warm.encoder == "dual_encoder" and dual_encoder is None:
        raise ConfigError("WarmStart.encoder = 'dual_encoder' needs train_dsi.dual_encoder "
                          "(a train_dual_encoder run's checkpoints)")


def warm_model(warm: WarmStart, vocab_size: int, pretrained: str | None = None,
               dtype: str = "float32", label_smoothing: float = 0.0
               ) -> tuple[WarmSeq2SeqModel, WordPieceTokenizer]:
    """The model (decoder sized from the BERT config) and the encoder's WordPiece tokenizer."""
    checkpoint = load_checkpoint(pretrained)
    bert = BertConfig.from_json(checkpoint.config_path)
    config = warm_decoder_config(bert, vocab_size, num_decoder_layers=warm.decoder_layers,
                                 dropout_rate=warm.dropout_rate, dtype=dtype)
    return (WarmSeq2SeqModel(config, label_smoothing=label_smoothing, bert=bert),
            WordPieceTokenizer(checkpoint.directory))


def row_embeddings(warm: WarmStart, collection: Collection, dual_encoder: DualEncoder | None,
                   pretrained: str | None = None, cache_dir: str | None = None
                   ) -> np.ndarray | None:
    """The document vectors output rows start from (None without `output_rows`): the fine-tuned
    dual encoder's when there is one, else zero-shot MiniLM's. Computed before training starts
    (they are cached on disk), never inside the trainer's sharding context."""
    if not warm.output_rows:
        return None
    return document_embeddings(collection, dual_encoder, pretrained, cache_dir)


def warm_params(warm: WarmStart, model: WarmSeq2SeqModel, scheme: DocidScheme,
                collection: Collection, dual_encoder: DualEncoder | None,
                vectors: np.ndarray | None, pretrained: str | None = None) -> dict[str, Any]:
    """The partial params the trainer merges into a fresh WarmT5 (models/warm_start.py);
    `vectors` from `row_embeddings`."""
    require_dual_encoder(warm, dual_encoder)
    if dual_encoder is not None and warm.encoder == "dual_encoder":
        encoder = dual_encoder.encoder_params
    else:
        checkpoint = load_checkpoint(pretrained)
        encoder = load_bert_params(checkpoint.weights_path, model.bert)
    rows = None
    if warm.output_rows:
        if vectors is None:
            raise ValueError("WarmStart.output_rows needs the document vectors (row_embeddings)")
        rows = docid_output_rows([scheme.docid_tokens(d) for d in collection.doc_ids], vectors,
                                 model.config.vocab_size)
    return warm_start_params(model.config, encoder, rows, temperature=warm.temperature)
