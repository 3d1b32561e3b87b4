"""Few-shot prompts that make a decoder LM write a search query for a document (Promptagator,
InPars), as one prefix shared by every document of a batch plus a short per-document suffix.

Two layouts of the same k labelled (document, query) examples:

    promptagator   "Article: {doc}\\nQuery: {query}\\n\\n" x k, then "Article: {doc}\\nQuery:"
    inpars         "Example i:\\nDocument: {doc}\\nRelevant Query: {query}\\n\\n" x k, then the same
                   with the target document and an empty query

For an instruct model (`chat='chatml'`: SmolLM2, Qwen2.5) the examples become conversation turns
instead: the user gives an article, the assistant answers with its query; the target article is
the last user turn and the prompt ends with the assistant header, exactly as the model's
`tokenizer.chat_template` renders it with `add_generation_prompt=True` (checked against jinja2's
rendering of the GGUF templates in tests/fixtures/qgen/). ChatML's default system message is part
of those templates, so it is taken from the GGUF's template text (`default_system_prompt`).

Every example and target document is cut to `doc_max_tokens` tokens of the LM's own tokenizer
(examples' queries to `query_max_tokens`), so the prompt length is bounded whatever the corpus:
the cut is at a token boundary found through the tokenizer's character offsets.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, Protocol

from irjax.choices import check_choice

STYLES = ("promptagator", "inpars")
CHATS = ("none", "chatml")
INSTRUCTION = "Write one short search query that the following article answers."
_CHATML_SYSTEM = re.compile(r"<\|im_start\|>system(?:\n|\\n)([^'\"{}<\\]+)<\|im_end\|>")


class TextTokenizer(Protocol):
    """What prompt building needs of a `tokenizers.Tokenizer`."""

    def encode(self, sequence: str, add_special_tokens: bool = ...) -> Any: ...


@dataclasses.dataclass(frozen=True)
class FewShotExample:
    """One labelled pair shown to the LM; ids are kept so the plan can be recorded."""

    doc_id: str
    document: str
    query: str


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """How prompts are laid out. `system`: the chat's system message (None: the template's
    default, '' : no system turn); ignored without a chat format."""

    style: str = "promptagator"
    chat: str = "none"
    system: str | None = None
    instruction: str = INSTRUCTION
    doc_max_tokens: int = 200
    query_max_tokens: int = 32

    def __post_init__(self) -> None:
        check_choice("PromptConfig.style", self.style, STYLES)
        check_choice("PromptConfig.chat", self.chat, CHATS)
        if self.doc_max_tokens < 1 or self.query_max_tokens < 1:
            raise ValueError(f"doc_max_tokens and query_max_tokens must be >= 1, got "
                             f"{self.doc_max_tokens} and {self.query_max_tokens}")


def truncate_tokens(tokenizer: TextTokenizer, text: str, max_tokens: int) -> str:
    """`text` cut after its first `max_tokens` tokens (no special tokens), at the end offset of
    the last kept token; whitespace around it is stripped."""
    text = " ".join(text.split())
    encoding = tokenizer.encode(text, add_special_tokens=False)
    if len(encoding.ids) <= max_tokens:
        return text
    return text[:encoding.offsets[max_tokens - 1][1]].strip()


def default_system_prompt(chat_template: str | None) -> str:
    """The system message a ChatML template inserts when the conversation has none (SmolLM2:
    'You are a helpful AI assistant named SmolLM, ...'; Qwen2.5: 'You are Qwen, ...')."""
    found = _CHATML_SYSTEM.search(chat_template or "")
    return found.group(1) if found else ""


def chat_format_of(chat_template: str | None) -> str:
    """'chatml' when the GGUF's template uses <|im_start|> turns, 'none' without a template.

    Other chat formats are refused rather than guessed, since a wrong format silently degrades
    every generated query."""
    if not chat_template:
        return "none"
    if "<|im_start|>" in chat_template:
        return "chatml"
    raise ValueError("the GGUF's tokenizer.chat_template is not ChatML; irjax writes only the "
                     "ChatML format: set PromptConfig.chat='none' to prompt it as a base model")


class FewShotPrompt:
    """The shared prefix and per-document suffixes of one few-shot prompt (module docstring).

    `system_default` is the template's default system message (`default_system_prompt`)."""

    def __init__(self, config: PromptConfig, examples: Sequence[FewShotExample],
                 tokenizer: TextTokenizer, system_default: str = ""):
        if not examples:
            raise ValueError("a few-shot prompt needs at least one labelled example")
        self.config, self.tokenizer = config, tokenizer
        self.examples = [FewShotExample(
            e.doc_id, self.cut_document(e.document),
            truncate_tokens(tokenizer, e.query, config.query_max_tokens)) for e in examples]
        self.system = system_default if config.system is None else config.system

    @property
    def chat(self) -> str:
        """The chat format ('none' | 'chatml'): what the generator's stop ids depend on."""
        return self.config.chat

    def cut_document(self, text: str) -> str:
        return truncate_tokens(self.tokenizer, text, self.config.doc_max_tokens)

    # Plain (base model) layouts.
    def _plain_shot(self, number: int, document: str, query: str | None) -> str:
        if self.config.style == "promptagator":
            head = f"Article: {document}\nQuery:"
        else:
            head = f"Example {number}:\nDocument: {document}\nRelevant Query:"
        return head if query is None else f"{head} {query}\n\n"

    # ChatML layout.
    def _user_turn(self, document: str) -> str:
        label = "Article" if self.config.style == "promptagator" else "Document"
        return f"<|im_start|>user\n{self.config.instruction}\n\n{label}: {document}<|im_end|>\n"

    def prefix(self) -> str:
        """The text shared by every document: the instruction/system turn and the k examples."""
        if self.config.chat == "none":
            return "".join(self._plain_shot(i + 1, e.document, e.query)
                           for i, e in enumerate(self.examples))
        head = f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system else ""
        return head + "".join(f"{self._user_turn(e.document)}<|im_start|>assistant\n"
                              f"{e.query}<|im_end|>\n" for e in self.examples)

    def suffix(self, document: str) -> str:
        """The target document's part, ending where the LM writes the query."""
        document = self.cut_document(document)
        if self.config.chat == "none":
            return self._plain_shot(len(self.examples) + 1, document, None)
        return self._user_turn(document) + "<|im_start|>assistant\n"

    def text(self, document: str) -> str:
        return self.prefix() + self.suffix(document)


def shared_token_prefix(prefix_ids: Sequence[int], prompts: Sequence[Sequence[int]]) -> int:
    """How many leading ids `prefix_ids` shares with every tokenized full prompt.

    Tokenizing the prefix alone can split its last characters differently from tokenizing it
    followed by a suffix; caching only the common ids keeps generation exactly that of the full
    prompt (prefix cache + each prompt's remaining ids)."""
    shared = len(prefix_ids)
    for prompt in prompts:
        limit = min(shared, len(prompt))
        n = 0
        while n < limit and prompt[n] == prefix_ids[n]:
            n += 1
        shared = n
    return shared


def clean_query(generated: str) -> str:
    """The query in an LM's continuation: its first non-empty line, without a leading label or
    surrounding quotes, whitespace collapsed ('' when nothing is left)."""
    for line in generated.splitlines():
        line = line.strip()
        if line:
            line = re.sub(r"^(?:relevant\s+)?query\s*:\s*", "", line, flags=re.IGNORECASE)
            line = line.strip().strip("\"'“”").strip()
            return " ".join(line.split())
    return ""
