"""LMQueryGenerator: generating through the cached few-shot prefix gives exactly the tokens of
generating from each full prompt without a cache; n samples per document; seeded."""
import numpy as np

from irjax.data.fewshot_prompts import FewShotExample, FewShotPrompt, PromptConfig, clean_query
from irjax.decoding.lm_generation import generate
from irjax.decoding.lm_query_generation import LMQueryGenerator, SamplingConfig
from irjax.models.decoder_lm import DecoderLM
from irjax.models.lm_import import config_from_hf, convert_state_dict
from tests.helpers.char_tokenizer import SPECIAL, VOCAB_SIZE, char_tokenizer
from tests.helpers.tiny_lm import LLAMA, random_checkpoint

EXAMPLES = [FewShotExample("a", "Cats purr when content.", "why do cats purr"),
            FewShotExample("b", "Ice melts above zero.", "when does ice melt")]
DOCS = [("d1", "Dogs bark at strangers."), ("d2", "Bees make honey from nectar in hives.")]


def generator(chat: str, sampling: SamplingConfig) -> LMQueryGenerator:
    cfg = dict(LLAMA, vocab_size=VOCAB_SIZE, tie_word_embeddings=False)
    config = config_from_hf(cfg)
    params = convert_state_dict(random_checkpoint(cfg, seed=5), config)
    prompt = FewShotPrompt(PromptConfig(chat=chat, doc_max_tokens=30), EXAMPLES, char_tokenizer(),
                           "You write queries.")
    return LMQueryGenerator(DecoderLM(config), params, char_tokenizer(), SPECIAL, prompt, sampling)


def test_cached_prefix_generation_equals_full_prompt_generation():
    sampling = SamplingConfig(queries_per_document=1, batch_size=2, max_new_tokens=5, greedy=True)
    for chat in ("none", "chatml"):
        lm = generator(chat, sampling)
        rows = lm.generate(DOCS)
        tokenizer = char_tokenizer()
        full = [tokenizer.encode(lm.prompt.text(text)).ids for _, text in DOCS]
        reference = generate(lm.model, lm.params, full, max_new_tokens=5, eos_ids=lm.stop_ids,
                             greedy=True, pad_id=0)
        for row, tokens in zip(rows, reference.sequences()):
            raw = tokenizer.decode([t for t in tokens if t not in lm.stop_ids])
            assert row["raw"] == raw and row["query"] == clean_query(raw)
        assert [r["doc_id"] for r in rows] == ["d1", "d2"]
        if chat == "none":  # newlines end a plain-prompt query
            assert 10 in lm.stop_ids


def test_samples_per_document_are_seeded():
    sampling = SamplingConfig(queries_per_document=3, batch_size=4, max_new_tokens=6,
                              temperature=1.0, top_p=None, seed=7)
    lm = generator("chatml", sampling)
    first = lm.generate(DOCS, batch_number=2)
    assert [(r["doc_id"], r["sample"]) for r in first] == [
        ("d1", 0), ("d1", 1), ("d1", 2), ("d2", 0), ("d2", 1), ("d2", 2)]
    assert lm.generate(DOCS, batch_number=2) == first
    assert len({r["raw"] for r in first}) > 1  # samples differ
    assert lm.timings["rows"] == 12 and lm.timings["generate_s"] > 0
    assert np.all([isinstance(r["query"], str) for r in first])
