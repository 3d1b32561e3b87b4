"""PromptReps (Zhuang et al. 2024): an instruct LM asked for one word that represents a text
gives, from a single forward pass, a dense and a sparse representation of it.

    'Passage: "<text>". Use one word to represent the passage in a retrieval task. Make sure
    your word is in lowercase.'  (chat turn; the assistant turn opened with 'The word is "')
      -> final hidden state of the last prompt position   = dense vector (normalised; cosine)
      -> next-token logits of that position, word tokens only, log(1 + relu), top-k kept
                                                          = sparse bag of words (dot product)

Queries use the same prompt with 'Query'. The answer's opening quote ends the prompt, so the
next token is the word itself: its logits rank candidate words, and the hidden state that
produces them summarises the text. No training, no generation: one prompt pass per text.

Texts are cut to a token budget of the LM's own tokenizer before prompting. Prompts are
left-padded in length buckets (multiples of `BUCKET` ids, `batch_size` rows), so the last prompt
position is the last column and few shapes are compiled; the vocabulary projection is applied to
that position only (as generation's last-only prompt pass does).

The sparse side indexes words, not token ids: a byte-level BPE vocabulary holds 'cancer' and
' cancer' as two ids, so every word token is mapped to its lower-case, space-stripped word and
a word's weight is the maximum over its ids (`word_vocabulary`).
irjax/retrieval/promptreps.py indexes the corpus with these and searches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from irjax.choices import check_choice
from irjax.data.batching import length_buckets
from irjax.data.fewshot_prompts import chat_format_of, default_system_prompt, truncate_tokens
from irjax.models.decoder_lm import DecoderLM
from irjax.parallel.fingerprint import params_digest

BUCKET = 32  # prompt widths are padded to multiples of this many ids
PASSAGE_PROMPT = ('Passage: "{text}". Use one word to represent the passage in a retrieval task. '
                  'Make sure your word is in lowercase.')
QUERY_PROMPT = ('Query: "{text}". Use one word to represent the query in a retrieval task. '
                'Make sure your word is in lowercase.')
ANSWER_PREFIX = 'The word is "'
PROMPT_VERSION = "1"  # part of the corpus cache key: bump when the prompt text changes


def word_vocabulary(tokenizer: Any, vocab_size: int,
                    min_chars: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The vocabulary's word tokens: (token ids [K], their word's column [K], words [W]).

    A word token decodes, leading space removed, to lower-case alphabetic text of at least
    `min_chars` characters (the paper's filter: whole, alphabetic, lower-case words; digits,
    punctuation, byte pieces, special and capitalised tokens are dropped). Ids decoding to the
    same word (with and without a leading space) share one column."""
    token_ids, columns, words, column_of = [], [], [], {}
    for token_id in range(vocab_size):
        text = tokenizer.decode([token_id], skip_special_tokens=True)
        word = text.lstrip(" ")
        if (len(word) < min_chars or not word.isalpha() or not word.islower()
                or word != word.strip() or text[:len(text) - len(word)] not in ("", " ")):
            continue
        if word not in column_of:
            column_of[word] = len(words)
            words.append(word)
        token_ids.append(token_id)
        columns.append(column_of[word])
    if not words:
        raise ValueError("the tokenizer has no lower-case alphabetic word tokens; PromptReps' "
                         "sparse side needs a word-level vocabulary")
    return np.asarray(token_ids, np.int32), np.asarray(columns, np.int32), words


def sparse_weights(logits: jax.Array, token_ids: jax.Array, columns: jax.Array, num_words: int,
                   top_k: int) -> tuple[jax.Array, jax.Array]:
    """Logits [B, V] -> the top_k word weights (values [B, k], word columns [B, k]).

    Only word tokens count; each gets log(1 + relu(logit)); a word takes the maximum over its
    token ids; all but the k largest are dropped (zeros among them are dropped later, when the
    CSR matrix is built)."""
    weights = jnp.log1p(jax.nn.relu(logits[:, token_ids].astype(jnp.float32)))
    per_word = jax.ops.segment_max(weights.T, columns, num_segments=num_words).T
    return jax.lax.top_k(per_word, min(top_k, num_words))


@dataclasses.dataclass
class Encoded:
    """Representations of texts: dense float32 [N, hidden] (not normalised), sparse CSR
    [N, words]; `tokens` [N] prompt lengths (the LM tokens each text cost)."""

    dense: np.ndarray
    sparse: sp.csr_matrix
    tokens: np.ndarray


def _last_position(module: DecoderLM, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, ...]:
    hidden = module.hidden(ids, mask)[:, -1]
    return hidden, module.logits(hidden)


class PromptRepsEncoder:
    """A decoder LM, its tokenizer and the PromptReps prompts; `encode` turns texts into
    `Encoded` representations. `chat`: 'chatml' (instruct models) or 'none' (base models: the
    instruction, a newline, then the answer prefix). `top_k` word weights are kept per text;
    `word_min_chars` is the shortest word token kept (`word_vocabulary`)."""

    def __init__(self, model: DecoderLM, params: Any, tokenizer: Any, chat: str = "chatml",
                 system: str = "", top_k: int = 128, batch_size: int = 16,
                 bos_id: int | None = None, pad_id: int = 0, name: str = "lm",
                 word_min_chars: int = 2) -> None:
        check_choice("PromptRepsEncoder.chat", chat, ("chatml", "none"))
        if top_k < 1 or batch_size < 1:
            raise ValueError(f"top_k and batch_size must be >= 1, got {top_k}, {batch_size}")
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.chat, self.system, self.top_k, self.batch_size = chat, system, top_k, batch_size
        self.bos_id, self.pad_id, self.name = bos_id, pad_id, name
        token_ids, columns, self.words = word_vocabulary(tokenizer, model.config.vocab_size,
                                                         word_min_chars)
        self._token_ids, self._columns = jnp.asarray(token_ids), jnp.asarray(columns)
        self._apply: Callable[..., tuple[jax.Array, ...]] = jax.jit(self._forward)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike, **options: Any) -> "PromptRepsEncoder":
        """Weights, tokenizer and chat format (from `tokenizer.chat_template`) of a GGUF."""
        from irjax.data.gguf_metadata import read_gguf_metadata
        from irjax.data.gguf_tokenizer import load_gguf_tokenizer
        from irjax.models.lm_import import load_lm, to_device

        template = read_gguf_metadata(path).get("tokenizer.chat_template")
        config, params = load_lm(path)
        tokenizer, special = load_gguf_tokenizer(path)
        defaults = dict(chat=chat_format_of(template), system=default_system_prompt(template),
                        bos_id=special.bos if special.add_bos else None,
                        pad_id=special.pad if special.pad is not None else 0,
                        name=Path(path).parent.name)
        return cls(DecoderLM(config), to_device(params), tokenizer, **{**defaults, **options})

    @property
    def num_words(self) -> int:
        return len(self.words)

    def _forward(self, params: Any, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, ...]:
        hidden, logits = self.model.apply({"params": params}, ids, mask, method=_last_position)
        values, columns = sparse_weights(logits, self._token_ids, self._columns,
                                         self.num_words, self.top_k)
        return hidden.astype(jnp.float32), values, columns

    def prompt_text(self, text: str, kind: str, max_tokens: int) -> str:
        """The full prompt of a passage or query (`kind`), the text cut to `max_tokens` tokens."""
        template = {"passage": PASSAGE_PROMPT, "query": QUERY_PROMPT}[kind]
        instruction = template.format(text=truncate_tokens(self.tokenizer, text, max_tokens))
        if self.chat == "none":
            return f"{instruction}\n{ANSWER_PREFIX}"
        system = f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system else ""
        return (f"{system}<|im_start|>user\n{instruction}<|im_end|>\n"
                f"<|im_start|>assistant\n{ANSWER_PREFIX}")

    def prompt_ids(self, texts: Sequence[str], kind: str, max_tokens: int) -> list[list[int]]:
        prompts = [self.prompt_text(t, kind, max_tokens) for t in texts]
        head = [] if self.bos_id is None else [self.bos_id]
        return [head + list(e.ids) for e in
                self.tokenizer.encode_batch(prompts, add_special_tokens=False)]

    def encode_ids(self, prompts: Sequence[Sequence[int]], bucket: int | None = BUCKET) -> Encoded:
        """Representations of tokenized prompts, left-padded in length buckets of `batch_size`
        rows (`bucket=None`: one unpadded prompt per call, the reference the tests compare
        with)."""
        lengths = np.asarray([len(p) for p in prompts], np.int64)
        if not len(prompts):
            return Encoded(np.zeros((0, self.model.config.hidden_size), np.float32),
                           sp.csr_matrix((0, self.num_words), dtype=np.float32), lengths)
        if (lengths == 0).any():
            raise ValueError("an empty prompt cannot be encoded")
        rows, width = (1, None) if bucket is None else (self.batch_size, bucket)
        buckets = length_buckets(lengths, rows, width or 1)
        dense = np.zeros((len(prompts), self.model.config.hidden_size), np.float32)
        values = np.zeros((len(prompts), min(self.top_k, self.num_words)), np.float32)
        columns = np.zeros(values.shape, np.int32)
        for b in buckets:
            ids = np.full((rows, b.length), self.pad_id, np.int32)
            mask = np.zeros((rows, b.length), np.int32)
            for row, i in enumerate(b.indices):
                ids[row, b.length - lengths[i]:] = prompts[i]
                mask[row, b.length - lengths[i]:] = 1
            hidden, top_values, top_columns = self._apply(self.params, jnp.asarray(ids),
                                                          jnp.asarray(mask))
            n = len(b)
            dense[b.indices] = np.asarray(hidden)[:n]
            values[b.indices] = np.asarray(top_values)[:n]
            columns[b.indices] = np.asarray(top_columns)[:n]
        indptr = np.arange(0, values.size + 1, values.shape[1])
        matrix = sp.csr_matrix((values.ravel(), columns.ravel(), indptr),
                               shape=(len(prompts), self.num_words), dtype=np.float32)
        matrix.eliminate_zeros()
        matrix.sort_indices()
        return Encoded(dense, matrix, lengths)

    def encode(self, texts: Sequence[str], kind: str, max_tokens: int) -> Encoded:
        return self.encode_ids(self.prompt_ids(texts, kind, max_tokens))

    def fingerprint(self) -> str:
        """Keys the corpus cache: parameters, prompts, chat format, system message, top-k and
        the word vocabulary (the sparse matrices' columns)."""
        settings = "\n".join([PASSAGE_PROMPT, ANSWER_PREFIX, self.chat, self.system,
                              str(self.bos_id), str(self.top_k), " ".join(self.words)])
        return params_digest(self.params)[:16] + "-" + hashlib.sha256(
            settings.encode()).hexdigest()[:12]
