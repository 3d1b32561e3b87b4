"""FirstReranker: sliding windows cover every candidate as specified; a window's order is the
sort of the first-token logits over the identifiers, with the logits rebuilt independently by the
float64 numpy forward pass of the tiny model on the same prompt; costs are counted per window."""
import numpy as np
import pytest

from irjax.models.decoder_lm import DecoderLM
from irjax.models.lm_import import config_from_hf, convert_state_dict
from irjax.retrieval.first_reranker import IDENTIFIERS, FirstReranker, window_spans
from irjax.retrieval.lm_prompt import InstructLM
from tests.helpers.char_tokenizer import SPECIAL, VOCAB_SIZE, char_tokenizer
from tests.helpers.tiny_lm import LLAMA, random_checkpoint, reference_logits

CFG = dict(LLAMA, vocab_size=VOCAB_SIZE, max_position_embeddings=4096)
PASSAGES = ["cats purr", "dogs bark loudly", "bees make honey", "ice melts", "owls hoot at night",
            "fish swim", "rain falls"]


def tiny_lm(seed: int = 5) -> tuple[InstructLM, dict]:
    tensors = random_checkpoint(CFG, seed=seed)
    config = config_from_hf(CFG)
    lm = InstructLM(DecoderLM(config), convert_state_dict(tensors, config), char_tokenizer(),
                    SPECIAL, chat="chatml", system="Rank.", name="tiny")
    return lm, tensors


@pytest.mark.parametrize("n,window,stride", [(20, 10, 5), (23, 20, 10), (7, 10, 5), (10, 4, 3),
                                              (9, 3, 3), (1, 5, 1), (0, 5, 2)])
def test_windows_cover_every_candidate_bottom_up(n, window, stride):
    spans = window_spans(n, window, stride)
    if n == 0:
        assert spans == []
        return
    assert spans[0] == (max(n - window, 0), n)  # starts at the bottom
    assert spans[-1][0] == 0  # ends at the top
    assert set().union(*(range(s, e) for s, e in spans)) == set(range(n))
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert e1 == e0 - stride  # each window one stride higher
        assert s1 == max(e1 - window, 0) and s1 < s0
    assert all(e - s == min(window, n) for s, e in spans[:-1])
    with pytest.raises(ValueError, match="stride"):
        window_spans(n, window, window + 1)


def test_window_order_is_the_sort_of_reference_first_token_logits():
    lm, tensors = tiny_lm()
    reranker = FirstReranker(lm, window=10, stride=5, passage_tokens=12, batch_size=2)
    query = "which animal purrs"
    prompt = reranker.prompt(query, PASSAGES)
    text = lm.tokenizer.decode(prompt, skip_special_tokens=False)
    assert text.endswith("<|im_start|>assistant\n") and "[F] fish swim" in text
    # the identifiers are the tokens of the letters themselves
    assert reranker.identifier_ids == [ord(c) for c in IDENTIFIERS[:10]]

    reference = reference_logits(CFG, tensors, np.asarray(prompt))[-1][reranker.identifier_ids]
    logits = reranker.window_logits([prompt])[0]
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)

    docs = {f"d{i}": text for i, text in enumerate(PASSAGES)}
    candidates = {"q": {f"d{i}": 10.0 - i for i in range(len(PASSAGES))}}
    run = reranker.rerank({"q": query}, candidates, docs)
    got = sorted(run["q"], key=run["q"].get, reverse=True)
    expected = [f"d{i}" for i in np.argsort(-reference[:len(PASSAGES)], kind="stable")]
    assert got == expected
    assert reranker.costs["model_calls"] == 1 and reranker.costs["lm_tokens"] == len(prompt)
    assert reranker.costs["flops"] > 2 * len(prompt)


def test_sliding_windows_apply_each_windows_reference_order():
    """Two windows: the bottom one reorders ranks 3..6, the top one ranks 0..3 of the result."""
    lm, tensors = tiny_lm(seed=9)
    reranker = FirstReranker(lm, window=4, stride=3, passage_tokens=8, batch_size=1)
    query = "night birds"
    order = list(PASSAGES)
    for start, end in window_spans(len(order), 4, 3):
        prompt = reranker.prompt(query, order[start:end])
        logits = reference_logits(CFG, tensors, np.asarray(prompt))[-1]
        scores = logits[reranker.identifier_ids[:end - start]]
        order[start:end] = [order[start + i] for i in np.argsort(-scores, kind="stable")]
    docs = {text: text for text in PASSAGES}
    run = reranker.rerank({"q": query}, {"q": {t: 10.0 - i for i, t in enumerate(PASSAGES)}},
                          docs)
    assert sorted(run["q"], key=run["q"].get, reverse=True) == order
    assert reranker.costs["model_calls"] == 2


def test_identifiers_must_be_single_tokens():
    lm, _ = tiny_lm()
    with pytest.raises(ValueError, match="single-token"):
        lm.single_token("AB")
    with pytest.raises(ValueError, match="window=27"):
        FirstReranker(lm, window=27, stride=5)
