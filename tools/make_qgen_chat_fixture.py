"""Writes tests/fixtures/qgen/chat_templates.json: each instruct GGUF's own `tokenizer.chat_template`
rendered by jinja2 (as transformers' apply_chat_template renders it, add_generation_prompt=True)
for one fixed few-shot conversation, so irjax's hand-written ChatML formatting
(irjax/data/fewshot_prompts.py) is compared with the template's exact output.

jinja2 is not an irjax dependency; it is in the reference venv (transformers needs it):

    .venv-ref/bin/python tools/make_qgen_chat_fixture.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jinja2  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

from irjax.data.gguf_metadata import read_gguf_metadata  # noqa: E402
from irjax.files import atomic_write_text  # noqa: E402
from irjax.models.weights_dir import gguf_path  # noqa: E402

MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
# What tests/data/test_fewshot_prompts.py builds: instruction + "Article: ..." user turns.
INSTRUCTION = "Write one short search query that the following article answers."
EXAMPLES = [("Aspirin lowers the risk of heart attacks in older adults.", "does aspirin prevent heart attacks"),
            ("Vitamin D deficiency is common in northern winters.", "vitamin d deficiency winter")]
TARGET = "Statins reduce LDL cholesterol by inhibiting HMG-CoA reductase."


def conversation(system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    for document, query in EXAMPLES:
        messages.append({"role": "user", "content": f"{INSTRUCTION}\n\nArticle: {document}"})
        messages.append({"role": "assistant", "content": query})
    messages.append({"role": "user", "content": f"{INSTRUCTION}\n\nArticle: {TARGET}"})
    return messages


def main() -> None:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    out = {"jinja2": jinja2.__version__, "instruction": INSTRUCTION, "examples": EXAMPLES,
           "target": TARGET, "models": {}}
    for name in MODELS:
        template = read_gguf_metadata(gguf_path(name))["tokenizer.chat_template"]
        render = env.from_string(template).render
        out["models"][name] = {
            "default_system": render(messages=conversation(None), add_generation_prompt=True),
            "custom_system": render(messages=conversation("You write search queries."),
                                    add_generation_prompt=True),
        }
    path = ROOT / "tests" / "fixtures" / "qgen" / "chat_templates.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
