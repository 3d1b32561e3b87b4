"""EmbeddingGemma as a text encoder: the Gemma 3 stack with bidirectional attention, mean pooling
over the real tokens, the sentence-transformers Dense projections (768 -> 3072 -> 768, no bias,
identity activation) and L2 normalisation, with the model's own query / document prompts.

    "task: search result | query: " + text --tokenizer.json--> [BOS] ... [EOS]
      --DecoderLM.hidden (bidirectional)--> mean over mask --2_Dense--> 3_Dense --> / ||.||

Matryoshka: the first 512, 256 or 128 dimensions are trained to stand alone; `truncate` keeps a
prefix and normalises it again (so dot products stay cosines). The checkpoint is the
sentence-transformers directory (config.json, model.safetensors, modules.json, 1_Pooling/,
2_Dense/, 3_Dense/, config_sentence_transformers.json, tokenizer.json); anything in it this
encoder would silently misread (another pooling, a bias, an activation) is refused.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irjax.data.tokenization import pad_sequences
from irjax.errors import InputFileError, MissingFileError
from irjax.models.decoder_lm import DecoderConfig, DecoderLM
from irjax.models.lm_import import load_hf
from irjax.models.weight_import import load_safetensors

MATRYOSHKA_DIMS = (768, 512, 256, 128)


@dataclasses.dataclass(frozen=True, eq=False)
class EmbeddingGemma:
    """The loaded encoder: backbone config and params, Dense kernels [in, out] in order, the
    prompts by name, the tokenizer file and the longest input (tokens, prompt included)."""

    config: DecoderConfig
    params: Any
    dense: tuple[np.ndarray, ...]
    prompts: dict[str, str]
    tokenizer_file: Path
    max_seq_length: int

    @functools.cached_property
    def tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.tokenizer_file))
        tok.no_padding()
        tok.no_truncation()
        return tok

    def tokenize(self, texts: Sequence[str], prompt: str,
                 max_length: int | None = None) -> list[list[int]]:
        """Ids of prompt + text with the tokenizer's BOS/EOS, at most `max_length` (default
        max_seq_length) of them. A longer sequence keeps its final EOS, as sentence-transformers'
        truncation does (it cuts the text and then adds the special tokens)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not one string")
        limit = self.max_seq_length if max_length is None else max_length
        encodings = self.tokenizer.encode_batch([prompt + t for t in texts])
        return [e.ids if len(e.ids) <= limit else e.ids[:limit - 1] + e.ids[-1:]
                for e in encodings]

    def embed_ids(self, sequences: Sequence[Sequence[int]], batch_size: int = 16) -> np.ndarray:
        """Unit-length float32 embeddings [N, 768] of token id sequences."""
        out = []
        for start in range(0, len(sequences), batch_size):
            batch = pad_sequences(sequences[start:start + batch_size], pad_id=0)
            out.append(np.asarray(_embed(DecoderLM(self.config), self.params, self.dense,
                                         jnp.asarray(batch.ids), jnp.asarray(batch.mask))))
        return np.concatenate(out) if out else np.zeros((0, self.dense[-1].shape[1]), np.float32)

    def encode_queries(self, texts: Sequence[str], dim: int | None = None) -> np.ndarray:
        return truncate(self.embed_ids(self.tokenize(texts, self.prompts["query"])), dim)

    def encode_documents(self, texts: Sequence[str], dim: int | None = None) -> np.ndarray:
        return truncate(self.embed_ids(self.tokenize(texts, self.prompts["document"])), dim)


@functools.partial(jax.jit, static_argnames=("model",))
def _embed(model: DecoderLM, params: Any, dense: tuple[jax.Array, ...], ids: jax.Array,
           mask: jax.Array) -> jax.Array:
    hidden = model.apply({"params": params}, ids, mask, method=DecoderLM.hidden)
    weights = mask.astype(jnp.float32)[..., None]
    pooled = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1) / jnp.maximum(
        jnp.sum(weights, axis=1), 1.0)
    for kernel in dense:
        pooled = pooled @ kernel
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def truncate(embeddings: np.ndarray, dim: int | None,
             trained_dims: Sequence[int] = MATRYOSHKA_DIMS) -> np.ndarray:
    """The first `dim` dimensions, normalised again (Matryoshka); None keeps them all. Only the
    prefixes the model was trained to use alone (`trained_dims`) are allowed."""
    if dim is None:
        return embeddings
    if dim not in trained_dims:
        raise ValueError(f"dim={dim}: EmbeddingGemma is trained for {tuple(trained_dims)}")
    head = embeddings[:, :dim]
    return head / np.maximum(np.linalg.norm(head, axis=-1, keepdims=True), 1e-12)


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise MissingFileError(f"{path} does not exist; pass the sentence-transformers directory "
                               "of EmbeddingGemma (tools/fetch_weights.py embeddinggemma-300m)")
    return json.loads(path.read_text())


def _dense_kernel(directory: Path) -> np.ndarray:
    """A sentence-transformers Dense module as a kernel [in, out]; refuses bias/activation."""
    config = _read_json(directory / "config.json")
    if config.get("bias", True) or not str(config.get("activation_function", "")).endswith(
            "Identity"):
        raise InputFileError(f"{directory}/config.json: only bias-free Dense layers with the "
                             f"Identity activation are supported, got {config}")
    tensors = load_safetensors(directory / "model.safetensors")
    if set(tensors) != {"linear.weight"}:
        raise InputFileError(f"{directory}/model.safetensors holds {sorted(tensors)}; expected "
                             "exactly linear.weight")
    weight = tensors["linear.weight"]
    if weight.shape != (config["out_features"], config["in_features"]):
        raise InputFileError(f"{directory}: linear.weight {weight.shape} does not match "
                             f"config.json's {config['in_features']} -> {config['out_features']}")
    return np.ascontiguousarray(weight.T.astype(np.float32))


def load_embedding_gemma(directory: str | os.PathLike, **overrides: Any) -> EmbeddingGemma:
    """EmbeddingGemma from its sentence-transformers directory."""
    directory = Path(directory)
    modules = _read_json(directory / "modules.json")
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds != ["Transformer", "Pooling", "Dense", "Dense", "Normalize"]:
        raise InputFileError(f"{directory}/modules.json: modules {kinds}; expected Transformer, "
                             "Pooling, Dense, Dense, Normalize (EmbeddingGemma)")
    pooling = _read_json(directory / modules[1]["path"] / "config.json")
    if not pooling.get("pooling_mode_mean_tokens") or not pooling.get("include_prompt", True):
        raise InputFileError(f"{directory}/{modules[1]['path']}: only mean pooling over all "
                             f"tokens (prompt included) is supported, got {pooling}")
    config, params = load_hf(directory, **overrides)
    if config.causal:
        raise InputFileError(f"{directory}/config.json: use_bidirectional_attention is not set; "
                             "this is not an EmbeddingGemma checkpoint")
    dense = tuple(_dense_kernel(directory / m["path"]) for m in modules[2:4])
    st_config = _read_json(directory / "config_sentence_transformers.json")
    prompts = st_config.get("prompts") or {}
    if "query" not in prompts or "document" not in prompts:
        raise InputFileError(f"{directory}/config_sentence_transformers.json has no 'query' and "
                             "'document' prompts")
    max_len = _read_json(directory / "sentence_bert_config.json").get("max_seq_length", 2048)
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.exists():
        raise MissingFileError(f"{tokenizer_file} does not exist")
    params = jax.tree.map(jnp.asarray, params)
    return EmbeddingGemma(config, params, tuple(jnp.asarray(k) for k in dense), dict(prompts),
                          tokenizer_file, int(max_len))
