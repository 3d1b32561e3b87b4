"""EmbeddingGemma behind the text-encoder contract that `DenseRetriever` and `MeshEncoder` use
(the one MiniLM's `TextEncoder` offers): `name`, `dim`, `max_length`, `batch_size`,
`bucket_multiple`, `micro_batch_tokens`, `params`, the pure `encode_batch(params, ids, mask)`,
a `tokenizer` with `pad_id` and `tokenize(texts, max_length)`, and a `fingerprint` that keys the
corpus embedding cache.

EmbeddingGemma embeds queries and documents with different prompts, so one loaded model gives
two encoders (one per prompt) sharing its parameters; the prompt is part of the fingerprint, as
are the weights, the length limit and the compute dtype. Matryoshka truncation is *not*: it is
applied to the cached full-width vectors (`truncate`), so one corpus encoding serves every width.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irjax.files import sha256_file
from irjax.models.decoder_lm import DecoderConfig, DecoderLM
from irjax.models.dual_encoder import CPU_MICRO_BATCH_TOKENS, l2_normalize, mean_pool
from irjax.models.embedding_gemma import MATRYOSHKA_DIMS, EmbeddingGemma, truncate


def embed_batch(config: DecoderConfig, params: dict[str, Any], ids: jax.Array,
                mask: jax.Array) -> jax.Array:
    """Unit-norm float32 [batch, dim]: bidirectional Gemma, mean pooling over the real tokens,
    the Dense projections (in float32), L2 norm. `params` = {'backbone': ..., 'dense': (...)}."""
    hidden = DecoderLM(config).apply({"params": params["backbone"]}, ids, mask,
                                     method=DecoderLM.hidden)
    pooled = mean_pool(hidden, mask)
    for kernel in params["dense"]:
        pooled = pooled @ kernel.astype(jnp.float32)
    return l2_normalize(pooled)


class PromptTokenizer:
    """Prompt + text -> ids (BOS ... EOS), the `tokenizer` a `MeshEncoder` calls."""

    pad_id = 0  # Gemma's <pad>; padded positions are masked out anyway

    def __init__(self, model: EmbeddingGemma, prompt: str):
        self.model, self.prompt = model, prompt

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
        return [np.asarray(ids, np.int32)
                for ids in self.model.tokenize(list(texts), self.prompt, max_length)]


class EmbeddingGemmaEncoder:
    """One side (prompt) of EmbeddingGemma as a text encoder; see the module docstring.

    `prompt` is a prompt name of the checkpoint ('query', 'document', ...). `max_length` counts
    tokens with the prompt and BOS/EOS. `weights_digest` identifies the checkpoint in the
    fingerprint (pass it to share one hash between both sides; default: sha256 of the files).
    """

    def __init__(self, model: EmbeddingGemma, prompt: str, *, name: str = "embeddinggemma-300m",
                 max_length: int = 256, batch_size: int = 16, bucket_multiple: int = 32,
                 micro_batch_tokens: int | None | str = "auto",
                 trained_dims: Sequence[int] = MATRYOSHKA_DIMS,
                 weights_digest: str | None = None):
        if prompt not in model.prompts:
            raise ValueError(f"prompt {prompt!r} is not one of the checkpoint's prompts "
                             f"({', '.join(sorted(model.prompts))})")
        if not 3 <= max_length <= model.max_seq_length:
            raise ValueError(f"max_length must be in [3, {model.max_seq_length}] (the "
                             f"checkpoint's max_seq_length), got {max_length}")
        self.model, self.prompt_name = model, prompt
        self.name = f"{name}-{prompt}"
        self.dim = int(model.dense[-1].shape[1])
        self.max_length, self.batch_size = max_length, batch_size
        self.bucket_multiple = bucket_multiple
        if micro_batch_tokens == "auto":
            micro_batch_tokens = CPU_MICRO_BATCH_TOKENS if jax.default_backend() == "cpu" else None
        self.micro_batch_tokens = micro_batch_tokens
        self.trained_dims = tuple(d for d in trained_dims if d <= self.dim)
        self.params = {"backbone": model.params, "dense": tuple(model.dense)}
        self.tokenizer = PromptTokenizer(model, model.prompts[prompt])
        self.encode_batch = functools.partial(embed_batch, model.config)
        self._weights_digest = weights_digest

    @functools.cached_property
    def fingerprint(self) -> str:
        """Changes with the weights, tokenizer, prompt text, max_length or compute dtype."""
        weights = self._weights_digest or checkpoint_digest(self.model)
        text = "\n".join((f"name={self.name}", f"weights={weights}",
                          f"prompt={self.model.prompts[self.prompt_name]}",
                          f"max_length={self.max_length}",
                          f"dtype={self.model.config.compute_dtype.name}"))
        return hashlib.sha256(text.encode()).hexdigest()

    def truncate(self, vectors: np.ndarray, dim: int | None) -> np.ndarray:
        """Matryoshka: the first `dim` dimensions, renormalised (one of `trained_dims`)."""
        return truncate(vectors, dim, self.trained_dims)


def checkpoint_digest(model: EmbeddingGemma) -> str:
    """sha256 over the checkpoint files that determine the vectors (weights, heads, tokenizer)."""
    directory = model.tokenizer_file.parent
    files = sorted(p for p in directory.rglob("*")
                   if p.is_file() and p.suffix in (".safetensors", ".json"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(directory)}={sha256_file(path)}\n".encode())
    return digest.hexdigest()


def embedding_gemma_encoders(model: EmbeddingGemma, **options: Any
                             ) -> tuple[EmbeddingGemmaEncoder, EmbeddingGemmaEncoder]:
    """(query encoder, document encoder) over one loaded model, hashing its files once."""
    digest = options.pop("weights_digest", None) or checkpoint_digest(model)
    return (EmbeddingGemmaEncoder(model, "query", weights_digest=digest, **options),
            EmbeddingGemmaEncoder(model, "document", weights_digest=digest, **options))
