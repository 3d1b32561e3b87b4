"""A cross-encoder: BERT reads `[CLS] query [SEP] document [SEP]` together and a linear head on
[CLS] gives one relevance score; `CrossEncoderScorer` runs it as a reranking `PairScorer`.

Query and document attend to each other in every layer, which a dual encoder's separate towers
cannot do; the price is one full forward pass per (query, document) pair at query time, which is
why it reranks a first stage's top candidates rather than a corpus. The encoder starts from a
pretrained BERT (all-MiniLM-L6-v2 by default: `from_pretrained`), the head from a small random
init. A trained model is a directory (`save`/`load`): config.json (the BERT fields plus the pair
lengths), model.safetensors (the flattened parameter tree) and the tokenizer file.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
from flax import traverse_util

from irjax.data.batching import length_buckets, padded_rows, restore_order
from irjax.data.tokenization import WordPieceTokenizer, pad_sequences
from irjax.errors import InputFileError, MissingFileError
from irjax.files import atomic_directory
from irjax.models.bert import BertConfig, BertEncoder, DenseGeneral, flops_per_token
from irjax.models.dual_encoder import CPU_MICRO_BATCH_TOKENS, micro_batch_rows
from irjax.models.hf_import import load_bert_params
from irjax.models.pretrained import load_checkpoint
from irjax.models.weight_import import expected_shapes, load_safetensors

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ARCHITECTURE = "irjax.CrossEncoder"


class CrossEncoder(nn.Module):
    """(ids, mask, token types) [batch, length] -> float32 relevance scores [batch]."""

    config: BertConfig
    dtype: Any = jnp.float32
    attention: str = "einsum"
    remat: str = "none"

    def setup(self) -> None:
        self.encoder = BertEncoder(self.config, dtype=self.dtype, attention=self.attention,
                                   remat=self.remat)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)
        init = nn.initializers.truncated_normal(stddev=self.config.initializer_range)
        self.head = DenseGeneral((1,), ("embed", None), 1, init, self.dtype)

    def cls_hidden(self, ids: jax.Array, mask: jax.Array, token_types: jax.Array,
                   deterministic: bool = True) -> jax.Array:
        """The encoder's last hidden state of [CLS], [batch, hidden]: what the head reads."""
        return self.encoder(ids, mask, token_types, deterministic)[:, 0]

    def __call__(self, ids: jax.Array, mask: jax.Array, token_types: jax.Array,
                 deterministic: bool = True) -> jax.Array:
        cls = self.dropout(self.cls_hidden(ids, mask, token_types, deterministic),
                           deterministic=deterministic)
        return self.head(cls)[:, 0].astype(jnp.float32)


def init_params(module: CrossEncoder, seed: int = 0) -> dict[str, Any]:
    """Fresh unboxed parameters {'encoder': ..., 'head': ...} (numpy-free, on the device)."""
    ids = jnp.zeros((1, 8), jnp.int32)
    return nn.meta.unbox(module.init(jax.random.key(seed), ids, jnp.ones_like(ids), ids)["params"])


def pair_flops(config: BertConfig, length: int) -> float:
    """Forward FLOPs of one pair padded to `length`: the encoder's per-token cost times the
    tokens, plus the head (2 x hidden)."""
    return length * flops_per_token(config, length) + 2.0 * config.hidden_size


class CrossEncoderScorer:
    """Scores (query, document) pairs with a `CrossEncoder`: a `PairScorer` for PairwiseReranker.

    Pairs are tokenized, sorted into length buckets (widths rounded up to `bucket_multiple`, so
    few shapes compile) and run `batch_size` rows at a time through one jitted forward; on CPU
    each batch is cut into cache-sized row slices inside the call (as TextEncoder does), which
    changes speed, not scores. `costs` after each call: {'flops': forward FLOPs of the pairs at
    their padded widths}.
    """

    def __init__(self, module: CrossEncoder, params: Any, tokenizer: WordPieceTokenizer, *,
                 name: str, max_length: int = 256, query_max_length: int = 64,
                 batch_size: int = 32, bucket_multiple: int = 32,
                 micro_batch_tokens: int | None | str = "auto"):
        if max_length > module.config.max_position_embeddings:
            raise ValueError(f"max_length {max_length} exceeds the model's max_position_embeddings "
                             f"{module.config.max_position_embeddings}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.module, self.tokenizer, self.name = module, tokenizer, name
        self.params = jax.device_put(params)
        self.max_length, self.query_max_length = max_length, query_max_length
        self.batch_size, self.bucket_multiple = batch_size, bucket_multiple
        if micro_batch_tokens == "auto":
            micro_batch_tokens = CPU_MICRO_BATCH_TOKENS if jax.default_backend() == "cpu" else None
        self.micro_batch_tokens = micro_batch_tokens
        self.costs: dict[str, float] = {}
        self._forward = jax.jit(self._sliced_forward)

    @property
    def config(self) -> BertConfig:
        return self.module.config

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, seed: int = 0,
                        **options: Any) -> "CrossEncoderScorer":
        """A pretrained BERT directory (default: the installed all-MiniLM-L6-v2) as the encoder,
        with a fresh head: the untrained starting point of training."""
        checkpoint = load_checkpoint(path)
        config = BertConfig.from_json(checkpoint.config_path)
        module = CrossEncoder(config)
        params = init_params(module, seed)
        params["encoder"] = load_bert_params(checkpoint.weights_path, config)
        return cls(module, params, WordPieceTokenizer(checkpoint.directory),
                   name=f"{checkpoint.name}-cross-encoder", **options)

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes config.json, model.safetensors and the tokenizer file, atomically as a whole."""
        from safetensors.numpy import save_file

        flat = traverse_util.flatten_dict(jax.device_get(self.params), sep="/")
        config = {"architectures": [ARCHITECTURE], "name": self.name,
                  "max_length": self.max_length, "query_max_length": self.query_max_length,
                  **dataclasses.asdict(self.config)}
        with atomic_directory(directory) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in flat.items()},
                      str(tmp / WEIGHTS_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
            shutil.copyfile(self.tokenizer.source, tmp / self.tokenizer.source.name)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, max_length: int | None = None,
             query_max_length: int | None = None, batch_size: int = 32,
             bucket_multiple: int = 32,
             micro_batch_tokens: int | None | str = "auto") -> "CrossEncoderScorer":
        """A directory written by `save` (e.g. WORKDIR/cross_encoder of train_cross_encoder);
        the pair lengths default to the saved ones."""
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise MissingFileError(f"{directory} lacks {CONFIG_FILE} or {WEIGHTS_FILE}; pass the "
                                   "directory a cross-encoder was saved to (train_cross_encoder "
                                   "writes WORKDIR/cross_encoder)")
        values = json.loads(config_path.read_text())
        if values.get("architectures") != [ARCHITECTURE]:
            raise InputFileError(f"{config_path}: architectures={values.get('architectures')!r}, "
                                 f"expected [{ARCHITECTURE!r}]; is this a cross-encoder directory?")
        config = BertConfig.from_dict(values)
        module = CrossEncoder(config)
        ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
        expected = {"/".join(k): v for k, v in expected_shapes(module.init, ids, ids, ids).items()}
        tensors = load_safetensors(directory / WEIGHTS_FILE)
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        if found != expected:
            wrong = sorted(set(found.items()) ^ set(expected.items()))
            raise InputFileError(f"{directory / WEIGHTS_FILE} does not match {config_path}: these "
                                 f"(name, shape) differ: {wrong[:6]}; re-save the model")
        params = traverse_util.unflatten_dict(tensors, sep="/")
        return cls(module, params, WordPieceTokenizer(directory),
                   name=values.get("name", directory.name),
                   max_length=max_length or values["max_length"],
                   query_max_length=query_max_length or values["query_max_length"],
                   batch_size=batch_size, bucket_multiple=bucket_multiple,
                   micro_batch_tokens=micro_batch_tokens)

    # -- scoring -------------------------------------------------------------------------------
    def _sliced_forward(self, params: Any, ids: jax.Array, types: jax.Array,
                        mask: jax.Array) -> jax.Array:
        rows, length = ids.shape
        step = micro_batch_rows(rows, length, self.micro_batch_tokens)

        def forward(batch: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
            ids, types, mask = batch
            return self.module.apply({"params": params}, ids, mask, types)

        if step == rows:
            return forward((ids, types, mask))
        cut = lambda x: x.reshape(rows // step, step, length)  # noqa: E731
        return jax.lax.map(forward, (cut(ids), cut(types), cut(mask))).reshape(rows)

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        """float32 scores [n] of the pairs (queries[i], documents[i]), in input order."""
        pairs = self.tokenizer.tokenize_pairs(queries, documents, self.max_length,
                                              self.query_max_length)
        lengths = np.fromiter((len(ids) for ids, _ in pairs), dtype=np.int64, count=len(pairs))
        buckets = length_buckets(lengths, self.batch_size, self.bucket_multiple, self.max_length)
        outputs, flops = [], 0.0
        for bucket in buckets:
            rows = padded_rows(len(bucket), self.batch_size)
            chosen = [pairs[j] for j in bucket.indices]
            ids = pad_sequences([p[0] for p in chosen], self.tokenizer.pad_id, bucket.length, rows)
            types = pad_sequences([p[1] for p in chosen], 0, bucket.length, rows)
            outputs.append(self._forward(self.params, ids.ids, types.ids, ids.mask))
            flops += len(bucket) * pair_flops(self.config, bucket.length)
        self.costs = {"flops": flops}
        if not outputs:
            return np.zeros(0, np.float32)
        host = [np.asarray(out, np.float32) for out in outputs]
        return restore_order(host, buckets)
