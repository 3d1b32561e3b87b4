"""Few-shot prompts: ChatML turns equal to the GGUF chat templates' own rendering (jinja2 fixture),
the plain layouts' exact strings, token budgets, the shared-prefix boundary and query cleanup."""
import json
from pathlib import Path

import pytest

from irjax.data.fewshot_prompts import (FewShotExample, FewShotPrompt, PromptConfig,
                                        chat_format_of, clean_query, default_system_prompt,
                                        shared_token_prefix, truncate_tokens)
from irjax.data.gguf_metadata import read_gguf_metadata
from irjax.data.gguf_tokenizer import load_gguf_tokenizer
from irjax.models.weights_dir import gguf_path
from tests.helpers.char_tokenizer import char_tokenizer

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "qgen" /
                      "chat_templates.json").read_text())


def _gguf(name: str) -> Path:
    path = gguf_path(name, must_exist=False)
    if not path.exists():
        pytest.skip(f"{name} weights not fetched (tools/fetch_weights.py {name})")
    return path


@pytest.mark.parametrize("name", sorted(FIXTURE["models"]))
def test_chatml_prompt_is_the_gguf_templates_rendering(name):
    path = _gguf(name)
    template = read_gguf_metadata(path)["tokenizer.chat_template"]
    assert chat_format_of(template) == "chatml"
    tokenizer, _ = load_gguf_tokenizer(path)
    examples = [FewShotExample(f"d{i}", doc, query)
                for i, (doc, query) in enumerate(FIXTURE["examples"])]
    for system, key in ((None, "default_system"), ("You write search queries.", "custom_system")):
        config = PromptConfig(chat="chatml", system=system, instruction=FIXTURE["instruction"])
        prompt = FewShotPrompt(config, examples, tokenizer, default_system_prompt(template))
        assert prompt.text(FIXTURE["target"]) == FIXTURE["models"][name][key]
        assert FIXTURE["models"][name][key].startswith(prompt.prefix())


def test_plain_layouts_exact_strings():
    tokenizer = char_tokenizer()
    examples = [FewShotExample("a", "Cats purr.", "why do cats purr"),
                FewShotExample("b", "Ice melts.", "when does ice melt")]
    prompt = FewShotPrompt(PromptConfig(), examples, tokenizer)
    assert prompt.text("Dogs bark.") == ("Article: Cats purr.\nQuery: why do cats purr\n\n"
                                         "Article: Ice melts.\nQuery: when does ice melt\n\n"
                                         "Article: Dogs bark.\nQuery:")
    inpars = FewShotPrompt(PromptConfig(style="inpars"), examples, tokenizer)
    assert inpars.text("Dogs bark.") == (
        "Example 1:\nDocument: Cats purr.\nRelevant Query: why do cats purr\n\n"
        "Example 2:\nDocument: Ice melts.\nRelevant Query: when does ice melt\n\n"
        "Example 3:\nDocument: Dogs bark.\nRelevant Query:")
    assert prompt.prefix() + prompt.suffix("Dogs bark.") == prompt.text("Dogs bark.")


def test_documents_and_queries_are_cut_to_their_token_budgets():
    tokenizer = char_tokenizer()  # one token per character: budgets are character counts
    long_doc, long_query = "abcdefghij " * 10, "q" * 50
    config = PromptConfig(doc_max_tokens=12, query_max_tokens=5)
    prompt = FewShotPrompt(config, [FewShotExample("a", long_doc, long_query)], tokenizer)
    assert prompt.examples[0].document == "abcdefghij a"
    assert prompt.examples[0].query == "qqqqq"
    assert prompt.suffix(long_doc) == "Article: abcdefghij a\nQuery:"
    assert truncate_tokens(tokenizer, "short", 12) == "short"


def test_truncation_with_a_real_bpe_tokenizer_keeps_at_most_the_budget():
    tokenizer, _ = load_gguf_tokenizer(_gguf("smollm2-135m-instruct"))
    text = ("Statins reduce low-density lipoprotein cholesterol by inhibiting HMG-CoA reductase, "
            "the rate-limiting enzyme of the mevalonate pathway. ") * 5
    for budget in (1, 7, 40):
        cut = truncate_tokens(tokenizer, text, budget)
        assert text.startswith(cut)
        assert len(tokenizer.encode(cut, add_special_tokens=False).ids) == budget


def test_shared_token_prefix_is_the_common_leading_ids():
    assert shared_token_prefix([1, 2, 3, 4], [[1, 2, 3, 4, 9], [1, 2, 3, 4, 8, 7]]) == 4
    assert shared_token_prefix([1, 2, 3, 4], [[1, 2, 3, 5, 9], [1, 2, 3, 4]]) == 3  # boundary merge
    assert shared_token_prefix([1, 2], [[7, 2]]) == 0


def test_clean_query_takes_the_first_line_without_labels_or_quotes():
    assert clean_query('  "What do statins do?"\nArticle: more') == "What do statins do?"
    assert clean_query("\n\nQuery:   effect of   aspirin ") == "effect of aspirin"
    assert clean_query("Relevant Query: x") == "x"
    assert clean_query("   \n ") == ""


def test_other_chat_templates_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="not ChatML"):
        chat_format_of("{{ '<start_of_turn>user' }}")
    assert chat_format_of(None) == "none"
    with pytest.raises(ValueError, match="PromptConfig.style"):
        PromptConfig(style="fancy")
    with pytest.raises(ValueError, match="at least one"):
        FewShotPrompt(PromptConfig(), [], char_tokenizer())
