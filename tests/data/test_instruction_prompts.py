"""InstructionPrompt: the ChatML and plain layouts, the shared prefix, slot checks; the HyDE
instruction of a collection found from its name or directory."""
import pytest

from irjax.data.instruction_prompts import (GENQR_INSTRUCTIONS, InstructionPrompt, genqr_templates,
                                            hyde_instruction)


def test_chatml_prompt_is_the_user_turn_then_the_assistant_header():
    prompt = InstructionPrompt("Answer.\nQ: {query}\nA:", chat="chatml", system="Be brief.")
    assert prompt.text("why  is\nthe sky blue") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAnswer.\nQ: why is the sky "
        "blue\nA:<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.text("x").startswith(prompt.prefix())
    assert prompt.prefix() == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAnswer.\nQ: "
    no_system = InstructionPrompt("{query}?", chat="chatml")
    assert no_system.text("q") == "<|im_start|>user\nq?<|im_end|>\n<|im_start|>assistant\n"


def test_plain_prompt_is_the_filled_template():
    prompt = InstructionPrompt("Claim: {query}\nPassage:", chat="none", system="ignored")
    assert prompt.text("a b") == "Claim: a b\nPassage:" and prompt.prefix() == "Claim: "


def test_templates_need_exactly_one_slot_and_a_known_chat():
    for bad in ("no slot", "{query} and {query}"):
        with pytest.raises(ValueError, match="exactly one"):
            InstructionPrompt(bad)
    with pytest.raises(ValueError, match="chat"):
        InstructionPrompt("{query}", chat="llama3")


def test_hyde_instruction_by_name_or_directory():
    assert "support/refute the claim" in hyde_instruction("scifact")
    assert hyde_instruction("/data/beir/SciFact") == hyde_instruction("scifact")
    assert "Question: {query}" in hyde_instruction("nfcorpus")
    with pytest.raises(ValueError, match="no HyDE instruction for 'msmarco-x'.*scifact"):
        hyde_instruction("msmarco-x")


def test_genqr_templates_are_the_paraphrases_with_a_query_slot():
    templates = genqr_templates()
    assert len(templates) == len(GENQR_INSTRUCTIONS) == len(set(templates)) == 10
    assert templates[0] == f"{GENQR_INSTRUCTIONS[0]}: {{query}}\nKeywords:"
    assert genqr_templates(3) == templates[:3]
    with pytest.raises(ValueError, match="has 10 instructions"):
        genqr_templates(11)
