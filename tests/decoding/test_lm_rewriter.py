"""LMRewriter with a tiny random LM: n texts per query, the disk cache serves a rerun (also from
a fresh rewriter) without calling the LM and regenerates when the prompt changes; costs count
prompt + generated tokens and FLOPs from the cache too; a corrupt cache file is a clear error."""
import json

import pytest

from irjax.decoding import lm_query_generation
from irjax.decoding.lm_query_generation import SamplingConfig
from irjax.decoding.lm_rewriter import LMRewriter
from irjax.models.decoder_lm import DecoderLM
from irjax.models.compute_budget import generation_flops
from irjax.models.lm_import import config_from_hf, convert_state_dict
from tests.helpers.char_tokenizer import SPECIAL, VOCAB_SIZE, char_tokenizer
from tests.helpers.tiny_lm import LLAMA, random_checkpoint

QUERIES = {"q1": "cats purr", "q2": "ice melts", "q3": "cats  purr"}  # q3: q1 up to whitespace
TEMPLATE = "Write about: {query}\nText:"


def rewriter(cache_dir, n=2) -> LMRewriter:
    cfg = dict(LLAMA, vocab_size=VOCAB_SIZE, tie_word_embeddings=False)
    config = config_from_hf(cfg)
    params = convert_state_dict(random_checkpoint(cfg, seed=3), config)
    sampling = SamplingConfig(queries_per_document=n, batch_size=4, max_new_tokens=6,
                              temperature=1.0, top_p=None, seed=1)
    return LMRewriter(DecoderLM(config), params, char_tokenizer(), SPECIAL, sampling,
                      chat="chatml", system="You help.", name="tiny", fingerprint="tiny-seed3",
                      cache_dir=str(cache_dir))


@pytest.fixture
def calls(monkeypatch):
    """Counts the rows the LM generates (LMQueryGenerator.generate is the only way to it)."""
    counted = []
    real = lm_query_generation.LMQueryGenerator.generate

    def counting(self, documents, batch_number=0):
        counted.extend(documents)
        return real(self, documents, batch_number)

    monkeypatch.setattr(lm_query_generation.LMQueryGenerator, "generate", counting)
    return counted


def test_cache_serves_reruns_without_the_lm_and_regenerates_for_a_new_prompt(tmp_path, calls):
    lm = rewriter(tmp_path)
    first = lm.rewrite(TEMPLATE, QUERIES)
    assert sorted(first) == ["q1", "q2", "q3"] and all(len(t) == 2 for t in first.values())
    assert first["q1"] == first["q3"]  # one generation per distinct (normalised) query
    assert len(calls) == 2 and lm.costs["generated_rows"] == 4 and lm.costs["cached_rows"] == 0
    costs = dict(lm.costs)

    again = rewriter(tmp_path)  # a fresh process: nothing in memory, the file on disk
    assert again.rewrite(TEMPLATE, QUERIES) == first
    assert len(calls) == 2 and again.costs["generated_rows"] == 0
    assert again.costs["cached_rows"] == 4
    for key in ("lm_tokens", "flops", "lm_ms"):  # the method's cost, also when cached
        assert again.costs[key] == pytest.approx(costs[key])

    again.rewrite(TEMPLATE.replace("Text:", "Passage:"), QUERIES)
    assert len(calls) == 4 and again.costs["generated_rows"] == 4
    rewriter(tmp_path, n=3).rewrite(TEMPLATE, {"q2": "ice melts"})  # other sampling: other file
    assert len(calls) == 5 and len(list(tmp_path.glob("*.json"))) == 3


def test_costs_count_prompt_and_generated_tokens(tmp_path, calls):
    lm = rewriter(tmp_path, n=1)
    lm.rewrite(TEMPLATE, {"q": "ab"})
    text = lm.prompt(TEMPLATE).text("ab")  # one id per character or ChatML marker
    prompt = len(text.replace("<|im_start|>", "S").replace("<|im_end|>", "E"))
    entry = lm.cache(TEMPLATE).get("ab")
    generated = entry["generated_tokens"]
    assert entry["prompt_tokens"] == prompt and 1 <= generated <= 6
    assert lm.costs["lm_tokens"] == prompt + generated
    assert lm.costs["flops"] == pytest.approx(generation_flops(lm.model.config, prompt, generated))


def test_corrupt_cache_file_is_a_clear_error(tmp_path, calls):
    lm = rewriter(tmp_path, n=1)
    lm.rewrite(TEMPLATE, {"q": "ab"})
    path = lm.cache(TEMPLATE).path
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*delete it"):
        lm.rewrite(TEMPLATE, {"q": "ab"})
    path.write_text(json.dumps({"entries": []}))
    with pytest.raises(ValueError, match="not a format-1 generation cache"):
        lm.rewrite(TEMPLATE, {"q": "ab"})
