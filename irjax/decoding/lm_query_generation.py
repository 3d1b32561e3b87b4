"""Few-shot query generation with a decoder LM: documents in, sampled queries out.

    FewShotPrompt (irjax/data/fewshot_prompts.py) --tokenize--> shared prefix ids + per-row ids
      --encode_prefix once--> prefix cache --generate (KV cache, sampling) per batch--> ids
      --decode, first line--> queries

Every row of every batch continues the same few-shot prefix, so its cache is computed once and
copied to the rows (`irjax.decoding.lm_generation`'s shared-prefix caching); only the target
document's tokens and the query are computed per row. `n` queries per document are `n` rows with
the same prompt and different samples. The prefix cache is sized in steps of `CACHE_BUCKET`
slots, and `generate` pads the rows' prompts to multiples of 32 ids within it, so batches of
similar length reuse one compiled prompt pass and decoding loop. The parameters are moved to the
device once at load (`to_device`), not copied there at every call.

Randomness is `jax.random.key(seed)` folded with the caller's batch number, so a resumed job
regenerates a part exactly as an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import jax

from irjax.data.fewshot_prompts import (FewShotExample, FewShotPrompt, PromptConfig,
                                        chat_format_of, clean_query, default_system_prompt,
                                        shared_token_prefix)
from irjax.data.gguf_metadata import read_gguf_metadata
from irjax.data.gguf_tokenizer import SpecialIds, load_gguf_tokenizer
from irjax.decoding.lm_generation import encode_prefix, generate
from irjax.models.decoder_lm import DecoderLM
from irjax.models.lm_import import load_lm, to_device

log = logging.getLogger(__name__)

CACHE_BUCKET = 128


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How queries are sampled: `queries_per_document` rows per document, `batch_size` rows per
    generate call; temperature/top-k/top-p as in lm_generation.generate (greedy overrides)."""

    queries_per_document: int = 1
    batch_size: int = 16
    max_new_tokens: int = 32
    temperature: float = 0.7
    top_k: int | None = None
    top_p: float | None = 0.95
    greedy: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.queries_per_document < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("queries_per_document, batch_size and max_new_tokens must be >= 1, "
                             f"got {self.queries_per_document}, {self.batch_size}, "
                             f"{self.max_new_tokens}")


def _stop_ids(tokenizer: Any, special: SpecialIds, chat: str) -> list[int]:
    """End of sequence, the chat's end-of-turn, and (plain prompts) newline tokens: a query is
    one line, so generating past it only costs time."""
    ids = {special.eos} if special.eos is not None else set()
    for token in ("<|im_end|>", "<|endoftext|>"):
        if (found := tokenizer.token_to_id(token)) is not None:
            ids.add(found)
    if chat == "none":
        for text in ("\n", "\n\n"):
            encoded = tokenizer.encode(text, add_special_tokens=False).ids
            if len(encoded) == 1:
                ids.add(encoded[0])
    return sorted(ids)


class GenerationPrompt(Protocol):
    """What the generator needs of a prompt: the text shared by every row, the whole prompt of
    one input, and its chat format. A `FewShotPrompt` (a document in, a query out) or an
    `irjax.data.instruction_prompts.InstructionPrompt` (a query in, a passage or keywords out)."""

    @property
    def chat(self) -> str: ...

    def prefix(self) -> str: ...

    def text(self, item: str) -> str: ...


class LMQueryGenerator:
    """A decoder LM, its tokenizer and one prompt (few-shot or zero-shot instruction);
    `generate` continues the prompt of every input."""

    def __init__(self, model: DecoderLM, params: Any, tokenizer: Any, special: SpecialIds,
                 prompt: GenerationPrompt, sampling: SamplingConfig, name: str = "lm"):
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.special, self.prompt, self.sampling, self.name = special, prompt, sampling, name
        self.stop_ids = _stop_ids(tokenizer, special, prompt.chat)
        self.pad_id = special.pad if special.pad is not None else 0
        self._prefix_ids = self._encode(prompt.prefix())
        self._cache: tuple[int, int, Any] | None = None  # (shared tokens, slots, DecodeCache)
        self.timings = {"generate_s": 0.0, "rows": 0, "generated_tokens": 0}
        # extra keyword arguments of lm_generation.generate (its speed switches; a benchmark
        # turns them off to time the earlier path)
        self.generate_options: dict[str, Any] = {}

    @classmethod
    def from_gguf(cls, path: str | Path, config: PromptConfig,
                  examples: Sequence[FewShotExample], sampling: SamplingConfig,
                  chat: str | None = None) -> "LMQueryGenerator":
        """Loads the GGUF's weights and tokenizer; `chat=None` takes the format from its
        `tokenizer.chat_template` (ChatML for SmolLM2/Qwen2.5 instruct, none for base models)."""
        template = read_gguf_metadata(path).get("tokenizer.chat_template")
        chat = chat_format_of(template) if chat is None else chat
        config = dataclasses.replace(config, chat=chat)
        lm_config, params = load_lm(path)
        params = to_device(params)
        tokenizer, special = load_gguf_tokenizer(path)
        prompt = FewShotPrompt(config, examples, tokenizer, default_system_prompt(template))
        return cls(DecoderLM(lm_config), params, tokenizer, special, prompt, sampling,
                   name=Path(path).parent.name)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=True).ids)

    def _prefix_cache(self, shared: int, longest_rest: int) -> Any:
        """The cached prefix (its first `shared` ids), recomputed only when too small or when the
        tokenization boundary moved."""
        need = shared + longest_rest + self.sampling.max_new_tokens
        if self._cache is None or self._cache[0] != shared or self._cache[1] < need:
            slots = -(-need // CACHE_BUCKET) * CACHE_BUCKET
            cache = encode_prefix(self.model, self.params, self._prefix_ids[:shared], slots)
            self._cache = (shared, slots, cache)
        return self._cache[2]

    def generate(self, documents: Sequence[tuple[str, str]],
                 batch_number: int = 0) -> list[dict[str, Any]]:
        """`{"doc_id", "sample", "query", "raw"}` for every document x sample, in input order.

        `raw` is the decoded continuation, `query` its cleaned first line ('' when nothing
        usable came out; callers count and drop those)."""
        s = self.sampling
        rows = [(doc_id, sample, self._encode(self.prompt.text(text)))
                for doc_id, text in documents for sample in range(s.queries_per_document)]
        out: list[dict[str, Any]] = []
        key = jax.random.fold_in(jax.random.key(s.seed), batch_number)
        for start in range(0, len(rows), s.batch_size):
            chunk = rows[start:start + s.batch_size]
            ids = [r[2] for r in chunk]
            # at least one id of every prompt stays outside the cache, to continue from
            shared = min(shared_token_prefix(self._prefix_ids, ids), min(map(len, ids)) - 1)
            if shared < 1:
                raise ValueError("the prompts share no token with the few-shot prefix; the "
                                 "prompt template is inconsistent")
            rest = [p[shared:] for p in ids]
            cache = self._prefix_cache(shared, max(len(r) for r in rest))
            began = time.perf_counter()
            result = generate(self.model, self.params, rest, max_new_tokens=s.max_new_tokens,
                              eos_ids=self.stop_ids, rng=jax.random.fold_in(key, start),
                              greedy=s.greedy, temperature=s.temperature, top_k=s.top_k,
                              top_p=s.top_p, prefix_cache=cache, pad_id=self.pad_id,
                              **self.generate_options)
            self.timings["generate_s"] += time.perf_counter() - began
            self.timings["rows"] += len(chunk)
            self.timings["generated_tokens"] += int(result.lengths.sum())
            for (doc_id, sample, _), tokens in zip(chunk, result.sequences()):
                tokens = [t for t in tokens if t not in self.stop_ids]
                raw = self.tokenizer.decode(tokens, skip_special_tokens=True)
                out.append({"doc_id": doc_id, "sample": sample, "query": clean_query(raw),
                            "raw": raw})
        return out
