"""A `DenseRetriever` over EmbeddingGemma: documents through the 'document' prompt, queries
through the 'query' prompt, one loaded model shared by both, Matryoshka width `dim` applied to
the cached full-width corpus vectors (so evaluating several widths encodes the corpus once)."""
from __future__ import annotations

import os
from typing import Any

from irjax.models.embedding_gemma import load_embedding_gemma
from irjax.models.embedding_gemma_encoder import embedding_gemma_encoders
from irjax.models.weights_dir import weights_dir
from irjax.retrieval.dense import DenseRetriever

MODEL_NAME = "embeddinggemma-300m"


def embedding_gemma_retriever(
    model_dir: str | os.PathLike | None = None,
    dim: int = 768,
    max_length: int = 256,
    dtype: str = "float32",
    batch_size: int = 16,
    index: str = "exact",
    index_options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
) -> DenseRetriever:
    """EmbeddingGemma from its sentence-transformers folder (default: the fetched
    $IRJAX_WEIGHTS_DIR/embeddinggemma-300m). `dtype` is the backbone's compute dtype
    ('bfloat16' halves activation traffic; pooling, Dense heads and norms stay float32);
    `max_length` counts prompt and BOS/EOS tokens."""
    directory = model_dir if model_dir is not None else weights_dir(MODEL_NAME)
    model = load_embedding_gemma(directory, dtype=dtype)
    query, document = embedding_gemma_encoders(model, max_length=max_length,
                                               batch_size=batch_size)
    return DenseRetriever(document, index=index, index_options=index_options,
                          cache_dir=cache_dir, query_encoder=query, dim=dim,
                          name=f"{MODEL_NAME}@{dim}+{index}")
