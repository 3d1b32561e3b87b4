"""Query rewriting with an instruct LM: queries in, `n` generated texts per query out (HyDE's
hypothetical passages, GenQREnsemble's keywords), through a disk cache of generations.

    template + query --InstructionPrompt--> prompt --LMQueryGenerator (shared-prefix KV cache,
    batched sampling)--> texts --GenerationCache (per model, template, sampling; keyed by query)

The LM is loaded once; every template gets its own `LMQueryGenerator` over the same weights, so
its instruction is encoded once and shared by every row. `costs` totals the last `rewrite`:
`lm_tokens` (prompt + generated tokens of every row), `flops` (irjax.models.compute_budget.generation_flops),
`lm_ms` (wall time of generating them, taken from the cache entry when it was served from
there), `generated_rows` / `cached_rows` (rows generated in this call vs. read back).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping

from irjax.data.fewshot_prompts import chat_format_of, default_system_prompt
from irjax.data.gguf_metadata import read_gguf_metadata
from irjax.data.gguf_tokenizer import SpecialIds, load_gguf_tokenizer
from irjax.data.instruction_prompts import InstructionPrompt
from irjax.decoding.generation_cache import GenerationCache
from irjax.decoding.lm_query_generation import LMQueryGenerator, SamplingConfig
from irjax.files import cache_root, sha256_file
from irjax.models.decoder_lm import DecoderLM
from irjax.models.compute_budget import generation_flops
from irjax.models.lm_import import load_lm, to_device


def normalise(text: str) -> str:
    """Whitespace collapsed: the cache key of a query and the form put in prompts."""
    return " ".join(text.split())


class LMRewriter:
    """An instruct LM that answers an instruction template for every query, `n` samples each
    (`sampling.queries_per_document`). `fingerprint` names the weights in cache keys."""

    def __init__(self, model: DecoderLM, params: Any, tokenizer: Any, special: SpecialIds,
                 sampling: SamplingConfig, *, chat: str = "chatml", system: str = "",
                 name: str = "lm", fingerprint: str | None = None,
                 cache_dir: str | None = None):
        self.model, self.params, self.tokenizer, self.special = model, params, tokenizer, special
        self.sampling, self.chat, self.system, self.name = sampling, chat, system, name
        self.fingerprint = fingerprint or name
        self.cache_dir = cache_dir or str(cache_root() / "lm_generations")
        self._generators: dict[str, LMQueryGenerator] = {}
        self.costs: dict[str, float] = {}

    @classmethod
    def from_gguf(cls, path: str | Path, sampling: SamplingConfig, chat: str | None = None,
                  system: str | None = None, cache_dir: str | None = None) -> "LMRewriter":
        """Loads a GGUF's weights and tokenizer; the chat format and default system message come
        from its `tokenizer.chat_template` unless given (as LMQueryGenerator.from_gguf)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF at {path}: fetch it with tools/fetch_weights.py "
                                    "or pass another LM")
        template = read_gguf_metadata(path).get("tokenizer.chat_template")
        config, params = load_lm(path)
        tokenizer, special = load_gguf_tokenizer(path)
        return cls(DecoderLM(config), to_device(params), tokenizer, special, sampling,
                   chat=chat_format_of(template) if chat is None else chat,
                   system=default_system_prompt(template) if system is None else system,
                   name=path.parent.name, fingerprint=sha256_file(path), cache_dir=cache_dir)

    def prompt(self, template: str) -> InstructionPrompt:
        return InstructionPrompt(template, chat=self.chat, system=self.system)

    def _generator(self, template: str) -> LMQueryGenerator:
        if template not in self._generators:
            self._generators[template] = LMQueryGenerator(
                self.model, self.params, self.tokenizer, self.special, self.prompt(template),
                self.sampling, name=self.name)
        return self._generators[template]

    def cache(self, template: str) -> GenerationCache:
        sampling = {k: v for k, v in dataclasses.asdict(self.sampling).items()
                    if k != "batch_size"}  # rows per call change nothing but the speed
        return GenerationCache(self.cache_dir, {
            "model": self.fingerprint, "template": template, "chat": self.chat,
            "system": self.system, "sampling": sampling})

    def rewrite(self, template: str, queries: Mapping[str, str]) -> dict[str, list[str]]:
        """`n` generated texts (stripped; '' when nothing came out) for every query id."""
        cache = self.cache(template)
        prompt = self.prompt(template)
        texts = {normalise(q) for q in queries.values()}
        missing = sorted(t for t in texts if cache.get(t) is None)
        generated_rows = 0
        started = time.perf_counter()
        if missing:
            generator = self._generator(template)
            n = self.sampling.queries_per_document
            per_call = max(1, self.sampling.batch_size // n)
            for number, start in enumerate(range(0, len(missing), per_call)):
                chunk = missing[start:start + per_call]
                before = generator.timings["generated_tokens"]
                began = time.perf_counter()
                rows = generator.generate([(q, q) for q in chunk], batch_number=number)
                seconds = time.perf_counter() - began
                new_tokens = (generator.timings["generated_tokens"] - before) / len(chunk)
                for query in chunk:
                    prompt_tokens = len(self.tokenizer.encode(
                        prompt.text(query), add_special_tokens=True).ids)
                    cache.put(query, {
                        "texts": [r["raw"].strip() for r in rows if r["doc_id"] == query],
                        "prompt_tokens": n * prompt_tokens, "generated_tokens": new_tokens,
                        "ms": 1000 * seconds / len(chunk)})
                generated_rows += len(rows)
                cache.save()
        totals = {"lm_tokens": 0.0, "flops": 0.0, "lm_ms": 0.0}
        n = self.sampling.queries_per_document
        for query in texts:
            entry = cache.get(query)
            totals["lm_tokens"] += entry["prompt_tokens"] + entry["generated_tokens"]
            totals["flops"] += n * generation_flops(
                self.model.config, entry["prompt_tokens"] / n, entry["generated_tokens"] / n)
            totals["lm_ms"] += entry["ms"]
        self.costs = {**totals, "generated_rows": float(generated_rows),
                      "cached_rows": float(len(texts) * n - generated_rows),
                      "lm_wall_ms": 1000 * (time.perf_counter() - started)}
        return {qid: list(cache.get(normalise(q))["texts"]) for qid, q in queries.items()}
