"""Sentence embeddings from a BERT encoder: pooling, L2 normalisation and bulk `encode`.

`encode_batch` is the pure function (params, ids, mask) -> unit vectors that training reuses;
`TextEncoder` wraps it with a tokenizer, length buckets and one jit compile per bucket shape, so
encoding a collection costs roughly its real tokens rather than batches × max_length.
"""
from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irjax.data.batching import length_buckets, padded_rows, restore_order
from irjax.data.tokenization import WordPieceTokenizer, pad_sequences
from irjax.files import sha256_file
from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.hf_import import load_bert_params
from irjax.models.pretrained import load_checkpoint


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Average of the hidden states of real (mask=1) tokens, in float32."""
    m = mask.astype(jnp.float32)[..., None]
    total = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
    return total / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def cls_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    del mask
    return hidden[:, 0].astype(jnp.float32)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps), as torch.nn.functional.normalize (all-zero rows stay zero)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


POOLING = {"mean": mean_pool, "cls": cls_pool}

# On CPU, activations of a whole batch (64 x 256 tokens: 200 MB of attention scores per layer)
# spill out of cache and the forward pass becomes memory bound; running it on slices of about
# this many tokens inside one jitted call keeps them cache-resident (about 3x faster measured).
CPU_MICRO_BATCH_TOKENS = 512


def encode_batch(
    module: BertEncoder,
    params: Any,
    ids: jax.Array,
    mask: jax.Array,
    pooling: str = "mean",
    deterministic: bool = True,
    rngs: dict[str, jax.Array] | None = None,
) -> jax.Array:
    """Unit-norm float32 embeddings [batch, hidden] for token ids and their 0/1 mask."""
    hidden = module.apply({"params": params}, ids, mask, deterministic=deterministic, rngs=rngs)
    return l2_normalize(POOLING[pooling](hidden, mask))


def micro_batch_rows(rows: int, length: int, tokens: int | None) -> int:
    """Largest divisor of `rows` holding at most `tokens` tokens of width `length` (at least 1)."""
    if tokens is None:
        return rows
    target = max(1, tokens // length)
    return max(d for d in range(1, min(rows, target) + 1) if rows % d == 0)


def encode_in_slices(
    encode: Any, params: Any, ids: jax.Array, mask: jax.Array, tokens: int | None
) -> jax.Array:
    """`encode(params, ids, mask)` applied to row slices in sequence (lax.map) inside one call."""
    rows, length = ids.shape
    step = micro_batch_rows(rows, length, tokens)
    if step == rows:
        return encode(params, ids, mask)
    sliced = (ids.reshape(rows // step, step, length), mask.reshape(rows // step, step, length))
    out = jax.lax.map(lambda batch: encode(params, *batch), sliced)
    return out.reshape(rows, -1)


def slice_count(rows: int, length: int, tokens: int | None) -> int:
    """How many slices of `micro_batch_rows` rows `rows` rows of width `length` make."""
    return rows // micro_batch_rows(rows, length, tokens)


class TextEncoder:
    """A pretrained sentence encoder: texts in, L2-normalised float32 vectors out, in input order."""

    def __init__(
        self,
        module: BertEncoder,
        params: Any,
        tokenizer: WordPieceTokenizer,
        *,
        name: str,
        max_length: int = 256,
        batch_size: int = 64,
        pooling: str = "mean",
        bucket_multiple: int = 32,
        micro_batch_tokens: int | None | str = "auto",
        fingerprint_parts: Sequence[str] = (),
    ):
        if max_length > module.config.max_position_embeddings:
            raise ValueError(
                f"max_length {max_length} exceeds the model's max_position_embeddings "
                f"{module.config.max_position_embeddings}"
            )
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {sorted(POOLING)}, got {pooling!r}")
        self.module = module
        self.params = jax.device_put(params)
        self.tokenizer = tokenizer
        self.name = name
        self.dim = module.config.hidden_size
        self.max_length = max_length
        self.batch_size = batch_size
        self.pooling = pooling
        self.bucket_multiple = bucket_multiple
        self._fingerprint_parts = tuple(fingerprint_parts)
        if micro_batch_tokens == "auto":
            micro_batch_tokens = CPU_MICRO_BATCH_TOKENS if jax.default_backend() == "cpu" else None
        self.micro_batch_tokens = micro_batch_tokens
        # encode_batch: the pure (params, ids, mask) -> vectors function, for training code;
        # forward: the same, jitted and sliced into micro-batches, what `encode` runs.
        self.encode_batch = functools.partial(encode_batch, module, pooling=pooling)
        self.forward = jax.jit(functools.partial(
            encode_in_slices, self.encode_batch, tokens=micro_batch_tokens))

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        max_length: int = 256,
        batch_size: int = 64,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        precision: jax.lax.PrecisionLike = None,
        bucket_multiple: int = 32,
        micro_batch_tokens: int | None | str = "auto",
        int8: bool = False,
    ) -> "TextEncoder":
        """Loads a sentence-transformers directory; without `path`, the installed MiniLM.

        `micro_batch_tokens` ("auto": 512 on CPU, off elsewhere) slices each batch inside the
        jitted call; it changes speed, not results. `dtype` is the compute dtype (bfloat16 for
        reduced precision); `int8` runs the dense projections as dynamic int8 matmuls
        (irjax/models/int8.py), which changes the vectors slightly and the cache key with them.
        """
        ckpt = load_checkpoint(path)
        config = BertConfig.from_json(ckpt.config_path)
        module = BertEncoder(config, dtype=dtype, param_dtype=param_dtype, precision=precision,
                             int8=int8)
        params = load_bert_params(ckpt.weights_path, config, param_dtype)
        tokenizer = WordPieceTokenizer(ckpt.directory)
        parts = (
            f"weights={sha256_file(ckpt.weights_path)}",
            f"config={hashlib.sha256(ckpt.config_path.read_bytes()).hexdigest()}",
            f"tokenizer={sha256_file(tokenizer.source)}",
            f"max_length={max_length}",
            f"pooling={ckpt.pooling}",
            f"dtype={jnp.dtype(dtype).name}",
            f"param_dtype={jnp.dtype(param_dtype).name}",
        ) + (("matmul=int8",) if int8 else ())
        return cls(module, params, tokenizer, name=ckpt.name, max_length=max_length,
                   batch_size=batch_size, pooling=ckpt.pooling, bucket_multiple=bucket_multiple,
                   micro_batch_tokens=micro_batch_tokens, fingerprint_parts=parts)

    @property
    def config(self) -> BertConfig:
        return self.module.config

    @functools.cached_property
    def fingerprint(self) -> str:
        """Changes whenever weights, config, tokenizer, max_length, pooling or dtypes change."""
        text = "\n".join((f"name={self.name}",) + self._fingerprint_parts)
        return hashlib.sha256(text.encode()).hexdigest()

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        progress: str | None = None,
        window: int = 1 << 16,
    ) -> np.ndarray:
        """float32 [n, dim] unit vectors in the order of `texts`.

        Texts are processed `window` at a time (bounding host memory); inside a window they are
        sorted into length buckets. One batch stays in flight on the device while the host pads
        the next, so padding and device-to-host copies overlap with compute.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of strings; wrap a single text in a list")
        texts = list(texts)
        batch_size = batch_size or self.batch_size
        bar = None
        if progress is not None:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc=progress, unit="text")
        chunks = [np.zeros((0, self.dim), np.float32)]
        try:
            for start in range(0, len(texts), window):
                chunks.append(self._encode_window(texts[start : start + window], batch_size, bar))
        finally:
            if bar is not None:
                bar.close()
        return np.concatenate(chunks, axis=0)

    def _encode_window(self, texts: list[str], batch_size: int, bar: Any) -> np.ndarray:
        seqs = self.tokenizer.tokenize(texts, self.max_length)
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        buckets = length_buckets(lengths, batch_size, self.bucket_multiple, self.max_length)
        outputs: list[Any] = []
        for i, bucket in enumerate(buckets):
            batch = pad_sequences([seqs[j] for j in bucket.indices], self.tokenizer.pad_id,
                                  pad_to=bucket.length, rows=padded_rows(len(bucket), batch_size))
            outputs.append(self.forward(self.params, batch.ids, batch.mask))
            if i > 0:
                outputs[i - 1] = self._fetch(outputs[i - 1], buckets[i - 1], bar)
        if outputs:
            outputs[-1] = self._fetch(outputs[-1], buckets[-1], bar)
        return restore_order(outputs, buckets)

    @staticmethod
    def _fetch(out: jax.Array, bucket: Any, bar: Any) -> np.ndarray:
        host = np.asarray(out, dtype=np.float32)[: len(bucket)]
        if bar is not None:
            bar.update(len(bucket))
        return host
