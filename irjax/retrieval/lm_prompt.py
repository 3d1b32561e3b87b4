"""An instruct LM ready for prompt-based reranking: the DecoderLM, its parameters on the device, its
tokenizer and its chat framing, plus prompts built from pieces whose token spans are known.

Listwise (FIRST) and attention-based (ICR) rerankers both need to know exactly which prompt
tokens belong to which passage (ICR sums attention over a passage's tokens; FIRST checks that
identifiers are single tokens). Tokenizing the whole prompt and mapping character offsets back is
fragile across BPE merges at piece boundaries, so prompts here are the concatenation of separately
tokenized pieces: the spans are exact by construction. The price is that a separator may come out
as other tokens than in the joined text (Qwen2.5 merges ".\n\n" into one token, SmolLM2 splits
"\n\n" after text into two newlines; alone, both give their "\n\n" token): tokens the model
knows, in a slightly unusual split.

Chat framing follows the GGUF's `tokenizer.chat_template` as LMQueryGenerator does: ChatML with
the template's default system message (SmolLM2, Qwen2.5 instruct), or a plain prompt ('none').
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from irjax.data.fewshot_prompts import chat_format_of, default_system_prompt, truncate_tokens
from irjax.data.gguf_metadata import read_gguf_metadata
from irjax.data.gguf_tokenizer import SpecialIds, load_gguf_tokenizer
from irjax.models.decoder_lm import DecoderLM
from irjax.models.lm_import import load_lm, to_device
from irjax.models.weights_dir import gguf_path


@dataclasses.dataclass
class InstructLM:
    """A decoder LM with what prompting it needs. `chat`: 'chatml' or 'none'."""

    model: DecoderLM
    params: Any
    tokenizer: Any
    special: SpecialIds
    chat: str = "chatml"
    system: str = ""
    name: str = "lm"

    @classmethod
    def from_gguf(cls, path: str | Path, chat: str | None = None) -> "InstructLM":
        """Weights, tokenizer and chat format (None: from the GGUF's template) of a GGUF file."""
        template = read_gguf_metadata(path).get("tokenizer.chat_template")
        chat = chat_format_of(template) if chat is None else chat
        config, params = load_lm(path)
        tokenizer, special = load_gguf_tokenizer(path)
        return cls(DecoderLM(config), to_device(params), tokenizer, special, chat,
                   default_system_prompt(template), Path(path).parent.name)

    @classmethod
    def from_name(cls, name: str) -> "InstructLM":
        """A fetched GGUF model by its weights name (irjax.models.weights_dir)."""
        return cls.from_gguf(gguf_path(name))

    @property
    def pad_id(self) -> int:
        return self.special.pad if self.special.pad is not None else 0

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt piece, without BOS/EOS."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def cut(self, text: str, max_tokens: int) -> str:
        """`text` (whitespace collapsed) cut after `max_tokens` tokens."""
        return truncate_tokens(self.tokenizer, text, max_tokens)

    def user_turn_start(self) -> str:
        """What precedes the user's message: system turn and user header (ChatML), or nothing."""
        if self.chat == "none":
            return ""
        system = f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system else ""
        return f"{system}<|im_start|>user\n"

    def assistant_start(self) -> str:
        """What ends the user's message and opens the answer."""
        return "<|im_end|>\n<|im_start|>assistant\n" if self.chat != "none" else "\n"

    def single_token(self, text: str) -> int:
        """The id of `text` when it is exactly one token; an error naming it otherwise."""
        ids = self.encode(text)
        if len(ids) != 1:
            raise ValueError(f"{text!r} is {len(ids)} tokens in {self.name}'s tokenizer "
                             f"({ids}); single-token identifiers are needed: pick others")
        return ids[0]


def bos_ids(lm: InstructLM) -> list[int]:
    """[BOS] when the tokenizer adds one at the start of a text (Gemma), else []."""
    return [lm.special.bos] if lm.special.add_bos and lm.special.bos is not None else []


def build_prompt(lm: InstructLM, pieces: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """(ids, [start, end) token span of each piece) of the pieces tokenized one by one and
    concatenated, after BOS when the tokenizer adds one."""
    ids = bos_ids(lm)
    spans = []
    for piece in pieces:
        start = len(ids)
        ids.extend(lm.encode(piece))
        spans.append((start, len(ids)))
    return ids, spans
