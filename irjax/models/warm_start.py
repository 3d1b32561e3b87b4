"""Warm-started generative retrieval: a pretrained BERT encoder (MiniLM, or a fine-tuned dual
encoder's) under a T5 decoder trained from scratch, which cross-attends over the BERT states.

No pretrained seq2seq weights exist offline, but a good sentence encoder does, and with atomic
docids DSI is an encoder plus a corpus-sized output layer: what the encoder already knows matters
most (warm-starting encoder-decoders from BERT: Rothe et al. 2020). `WarmSeq2SeqModel` is a
`Seq2SeqModel` (same loss, trainer, trie-constrained beam search and metrics) whose module,
`WarmT5`, swaps T5's encoder for `BertEncoder`; the decoder is T5's, with d_model = the BERT
hidden size (384 for MiniLM), so encoder states feed cross-attention unprojected. Inputs are
WordPiece ids ([CLS] ... [SEP]); the decoder's input embeddings and output layer are its own
(docid tokens, EOS, start).

`warm_start_params` can also start the model *as* a dual encoder. With

  - the first decoder layer's cross-attention: query kernel 0 (uniform attention over the real
    input tokens), value and output kernels the identity (6 heads x 64 = 384), so its output is
    the mean of the encoder states -- sentence-transformers' mean pooling;
  - every other residual branch (self-attention and MLP outputs, later cross-attentions) 0,
    and the decoder input embeddings 0, so the residual stream after the decoder is exactly
    that pooled vector at every position;
  - the final RMSNorm scale s = 1 / (temperature * sqrt(d)): RMSNorm(y) = sqrt(d) * y / |y|, so
    the final state is the L2-normalised query embedding / temperature;
  - the output row of docid token t = the L2-normalised mean of the dual encoder's embeddings of
    the documents whose docid contains t (`docid_output_rows`; for atomic docids: exactly the
    document's embedding), every other row 0 except EOS's: a fixed random unit vector u;
  - the decoder input embedding of the start token 0, of every docid token `EOS_DIRECTION_SCALE`
    x u, of every other token 0,

the first decoding step's logits are cos(query, document) / temperature, the dual encoder's own
scores, and every later step sees u x 100 + the pooled query whatever docid token came before, so
its final state is ~u and EOS gets nearly all the probability, the same for every document of a
query. Beam search over atomic docids therefore ranks documents exactly as the dual encoder does.
Training then moves every part from there: DSI starts at the dual encoder instead of at chance.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import EOS_ID, T5, Dense, Decoder, T5Config

EOS_DIRECTION_SCALE = 100.0  # >> the norm of a mean-pooled MiniLM state (~5 to 10)


class WarmT5(T5):
    """T5 with a BERT encoder: `encode` runs `BertEncoder` on WordPiece ids; everything after
    it (decoder, logits, decode cache) is T5's. `config` describes the decoder."""

    bert: BertConfig = BertConfig()

    def setup(self) -> None:
        cfg = self.config
        if cfg.d_model != self.bert.hidden_size:
            raise ValueError(f"decoder d_model {cfg.d_model} must equal the BERT hidden size "
                             f"{self.bert.hidden_size}: cross-attention reads the BERT states as is")
        if cfg.tie_word_embeddings:
            raise ValueError("WarmT5 needs untied output rows (tie_word_embeddings=False)")
        self.shared = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype,
                               embedding_init=nn.with_logical_partitioning(
                                   nn.initializers.normal(1.0), ("vocab", "embed")))
        self.encoder = BertEncoder(self.bert, dtype=cfg.compute_dtype, precision=self.precision)
        self.decoder = Decoder(cfg, self.precision)
        self.lm_head = Dense((cfg.vocab_size,), ("embed", "vocab"), cfg.d_model**-0.5, 1,
                             cfg.compute_dtype, self.precision)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def encode(self, input_ids: jnp.ndarray, input_mask: jnp.ndarray,
               deterministic: bool = True) -> jnp.ndarray:
        """BERT hidden states [B, Li, d_model] (post-LayerNorm, as a sentence encoder pools them)."""
        return self.encoder(input_ids, input_mask, deterministic=deterministic)


def warm_decoder_config(bert: BertConfig, vocab_size: int, *, num_decoder_layers: int = 2,
                        d_kv: int = 64, dropout_rate: float = 0.1,
                        dtype: str = "float32") -> T5Config:
    """The decoder of a WarmT5 over `bert`: d_model = hidden size, heads of `d_kv` covering it
    exactly (so cross-attention can start as the identity), d_ff = BERT's intermediate size."""
    d = bert.hidden_size
    if d % d_kv:
        raise ValueError(f"hidden size {d} is not a multiple of d_kv={d_kv}")
    if num_decoder_layers < 1:
        raise ValueError(f"num_decoder_layers must be >= 1, got {num_decoder_layers}")
    return T5Config(vocab_size=vocab_size, d_model=d, d_kv=d_kv, d_ff=bert.intermediate_size,
                    num_layers=num_decoder_layers, num_decoder_layers=num_decoder_layers,
                    num_heads=d // d_kv, dropout_rate=dropout_rate, tie_word_embeddings=False,
                    dtype=dtype)


@dataclasses.dataclass(frozen=True)
class WarmSeq2SeqModel(Seq2SeqModel):
    """`Seq2SeqModel` over `WarmT5`: `config` is the decoder, `bert` the encoder."""

    bert: BertConfig = BertConfig()

    @property
    def module(self) -> WarmT5:
        return WarmT5(self.config, bert=self.bert)


def docid_output_rows(docids: Sequence[Sequence[int]], embeddings: np.ndarray,
                      vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n], rows [n, d]): for every token that occurs in some docid, the L2-normalised
    mean embedding of the documents whose docid contains it (atomic docids: the document's own
    embedding). `docids` and `embeddings` are in the same (corpus) order."""
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or len(x) != len(docids):
        raise ValueError(f"embeddings of shape {x.shape} for {len(docids)} docids; need one row "
                         "per document in the docids' order")
    sums = np.zeros((vocab_size, x.shape[1]))
    seen = np.zeros(vocab_size, bool)
    for row, docid in zip(x, docids):
        tokens = np.unique(np.asarray(docid, np.int64))
        if tokens.max(initial=0) >= vocab_size:
            raise ValueError(f"docid {tuple(docid)} has a token outside the vocabulary of {vocab_size}")
        sums[tokens] += row
        seen[tokens] = True
    tokens = np.flatnonzero(seen)
    rows = sums[tokens]
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return tokens, rows.astype(np.float32)


def warm_start_params(config: T5Config, encoder_params: Mapping[str, Any] | None,
                      output_rows: tuple[np.ndarray, np.ndarray] | None = None, *,
                      temperature: float = 0.05) -> dict[str, Any]:
    """The (partial) params a `WarmT5` starts from: the encoder's, and with `output_rows`
    (tokens, rows from `docid_output_rows`) the dual-encoder start of the module docstring.
    Leaves not given keep their fresh initialisation (merged by the trainer)."""
    params: dict[str, Any] = {}
    if encoder_params is not None:
        params["encoder"] = encoder_params
    if output_rows is None:
        return params
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    d, heads, d_kv, d_ff = config.d_model, config.num_heads, config.d_kv, config.d_ff
    if heads * d_kv != d:
        raise ValueError(f"the pooling start needs num_heads * d_kv == d_model, got {heads} x "
                         f"{d_kv} != {d}")
    tokens, rows = output_rows
    if rows.ndim != 2 or rows.shape[1] != d or len(tokens) != len(rows):
        raise ValueError(f"output rows of shape {rows.shape} for {len(tokens)} tokens; the decoder "
                         f"has d_model {d}")
    eye = np.eye(d, dtype=np.float32)
    zeros_out = np.zeros((heads, d_kv, d), np.float32)
    decoder: dict[str, Any] = {}
    for i in range(config.num_decoder_layers):
        layer = {"self_attention": {"out": {"kernel": zeros_out}},
                 "cross_attention": {"out": {"kernel": zeros_out}},
                 "mlp": {"wo": {"kernel": np.zeros((d_ff, d), np.float32)}}}
        if i == 0:
            layer["cross_attention"] = {
                "query": {"kernel": np.zeros((d, heads, d_kv), np.float32)},
                "value": {"kernel": eye.reshape(d, heads, d_kv)},
                "out": {"kernel": eye.reshape(heads, d_kv, d)}}
        decoder[f"layer_{i}"] = layer
    decoder["final_norm"] = {"scale": np.full((d,), 1.0 / (temperature * math.sqrt(d)),
                                              np.float32)}
    tokens = np.asarray(tokens, np.int64)
    if np.isin(tokens, [0, EOS_ID]).any():
        raise ValueError("docid tokens may not be the start/pad (0) or EOS token")
    eos = np.random.default_rng(0xE05).normal(size=d)  # any fixed direction
    eos /= np.linalg.norm(eos)
    kernel = np.zeros((d, config.vocab_size), np.float32)
    kernel[:, tokens] = np.asarray(rows, np.float32).T
    kernel[:, EOS_ID] = eos
    embedding = np.zeros((config.vocab_size, d), np.float32)
    embedding[tokens] = EOS_DIRECTION_SCALE * eos
    params.update(decoder=decoder, shared={"embedding": embedding}, lm_head={"kernel": kernel})
    return params
