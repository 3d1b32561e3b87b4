"""Zero-shot instruction prompts around one query, and the published instructions of two query
expansion methods: HyDE (Gao et al. 2022) and GenQREnsemble (Dhole & Agichtein 2024).

An `InstructionPrompt` is a template with one `{query}` slot. For an instruct model
(`chat='chatml'`: SmolLM2, Qwen2.5) the filled template is the user turn and the prompt ends with
the assistant header, as the model's chat template renders it with `add_generation_prompt=True`;
without a chat format it is the filled template itself (the paper's completion-style prompt).
Everything before the slot is the same for every query, so `prefix()` is what
`irjax.decoding.lm_query_generation.LMQueryGenerator` encodes once and shares across rows.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from irjax.choices import check_choice
from irjax.data.fewshot_prompts import CHATS

SLOT = "{query}"

# HyDE's instructions (the paper's Appendix / its promptor): SciFact as published; NFCorpus and
# Cranfield are not in the paper, so they take its TREC-COVID instruction (a scientific passage
# answering a question), the closest of its collections; 'web' is its default (MS MARCO / DL).
HYDE_INSTRUCTIONS = {
    "web": "Please write a passage to answer the question.\nQuestion: {query}\nPassage:",
    "scifact": "Please write a scientific paper passage to support/refute the claim.\n"
               "Claim: {query}\nPassage:",
    "trec-covid": "Please write a scientific paper passage to answer the question.\n"
                  "Question: {query}\nPassage:",
    "nfcorpus": "Please write a scientific paper passage to answer the question.\n"
                "Question: {query}\nPassage:",
    "cranfield": "Please write a scientific paper passage to answer the question.\n"
                 "Question: {query}\nPassage:",
    "fiqa": "Please write a financial article passage to answer the question.\n"
            "Question: {query}\nPassage:",
    "arguana": "Please write a counter argument for the passage.\nPassage: {query}\n"
               "Counter Argument:",
    "trec-news": "Please write a news passage about the topic.\nTopic: {query}\nPassage:",
}

# GenQREnsemble's ten paraphrases of one keyword-expansion instruction, as in the paper's
# Table 1 (written down from the paper, not copied from code: a word may differ), each followed
# by the query and asking for keywords.
GENQR_INSTRUCTIONS = (
    "Improve the search effectiveness by suggesting expansion terms for the query",
    "Recommend expansion terms for the query to improve search results",
    "Improve the search effectiveness by suggesting useful expansion terms for the query",
    "Maximize search utility by suggesting relevant expansion phrases for the query",
    "Enhance search efficiency by proposing valuable terms to expand the query",
    "Elevate search performance by recommending relevant expansion phrases for the query",
    "Boost the search accuracy by providing helpful expansion terms to enrich the query",
    "Increase the search efficacy by offering beneficial expansion keywords for the query",
    "Optimize search results by suggesting meaningful expansion terms to enhance the query",
    "Enhance search outcomes by recommending beneficial expansion terms to supplement the query",
)
GENQR_TEMPLATE = "{instruction}: {query}\nKeywords:"


def hyde_instruction(task: str) -> str:
    """HyDE's template for a collection: `task` is a key of HYDE_INSTRUCTIONS or a dataset name
    or directory whose last part is one (e.g. /data/scifact)."""
    key = Path(task).name.lower()
    if key not in HYDE_INSTRUCTIONS:
        raise ValueError(f"no HyDE instruction for {task!r}: name one of "
                         f"{sorted(HYDE_INSTRUCTIONS)} (hyde_retriever.task)")
    return HYDE_INSTRUCTIONS[key]


def genqr_templates(count: int = len(GENQR_INSTRUCTIONS)) -> list[str]:
    """The first `count` GenQREnsemble instructions as templates with a query slot."""
    if not 1 <= count <= len(GENQR_INSTRUCTIONS):
        raise ValueError(f"GenQREnsemble has {len(GENQR_INSTRUCTIONS)} instructions; "
                         f"asked for {count}")
    return [GENQR_TEMPLATE.replace("{instruction}", text) for text in GENQR_INSTRUCTIONS[:count]]


@dataclasses.dataclass(frozen=True)
class InstructionPrompt:
    """`template` with exactly one `{query}` slot; `system` is the chat's system message (''
    for none; the loader passes the template's default, as few-shot prompts do)."""

    template: str
    chat: str = "chatml"
    system: str = ""

    def __post_init__(self) -> None:
        check_choice("InstructionPrompt.chat", self.chat, CHATS)
        if self.template.count(SLOT) != 1:
            raise ValueError(f"an instruction template needs exactly one {SLOT} slot, got "
                             f"{self.template.count(SLOT)} in {self.template!r}")

    def _head(self) -> str:
        if self.chat == "none":
            return ""
        system = f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system else ""
        return system + "<|im_start|>user\n"

    def prefix(self) -> str:
        """The text every query's prompt starts with (up to the slot)."""
        return self._head() + self.template.split(SLOT)[0]

    def text(self, query: str) -> str:
        """The whole prompt for `query`, ending where the LM writes its answer."""
        filled = self.template.replace(SLOT, " ".join(query.split()))
        if self.chat == "none":
            return filled
        return self._head() + filled + "<|im_end|>\n<|im_start|>assistant\n"
