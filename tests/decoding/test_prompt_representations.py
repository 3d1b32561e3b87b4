"""PromptReps representations of a tiny random LM: the dense vector is the full forward pass's
final hidden state at the last prompt position (numpy float64 reference), the sparse vector keeps
word tokens only, log(1 + relu(logit)), top-k; bucketed, left-padded batches equal one unpadded
prompt at a time; word tokens of a byte-level vocabulary share a column per word."""
import functools

import numpy as np
import pytest

from irjax.decoding.prompt_representations import (ANSWER_PREFIX, PromptRepsEncoder,
                                                   word_vocabulary)
from irjax.models.decoder_lm import DecoderLM
from irjax.models.lm_import import config_from_hf, convert_state_dict
from tests.helpers.char_tokenizer import VOCAB_SIZE, char_tokenizer
from tests.helpers.tiny_lm import LLAMA, random_checkpoint, reference_hidden, reference_logits

CFG = dict(LLAMA, vocab_size=VOCAB_SIZE, tie_word_embeddings=False)
TEXTS = ["Cats purr.", "Bees make honey from nectar in hives every summer day.", "Ice",
         "Glaciers carve valleys slowly."]


@functools.lru_cache(maxsize=None)
def checkpoint() -> dict:
    return random_checkpoint(CFG, seed=3)


def encoder(top_k: int = 5, batch_size: int = 3, chat: str = "chatml") -> PromptRepsEncoder:
    config = config_from_hf(CFG)
    params = convert_state_dict(checkpoint(), config)
    return PromptRepsEncoder(DecoderLM(config), params, char_tokenizer(), chat=chat,
                             system="You help.", top_k=top_k, batch_size=batch_size,
                             word_min_chars=1)


def test_prompt_layout():
    lm = encoder()
    text = lm.prompt_text("Bees make honey.", "passage", 1000)
    assert text == ('<|im_start|>system\nYou help.<|im_end|>\n<|im_start|>user\nPassage: "Bees '
                    'make honey.". Use one word to represent the passage in a retrieval task. '
                    'Make sure your word is in lowercase.<|im_end|>\n<|im_start|>assistant\n'
                    'The word is "')
    assert encoder(chat="none").prompt_text("x", "query", 9).startswith('Query: "x". Use one')
    assert lm.prompt_text("abcdefghij", "query", 4).count("abcd") == 1  # cut to 4 tokens
    assert "abcde" not in lm.prompt_text("abcdefghij", "query", 4)
    assert text.endswith(ANSWER_PREFIX)


def test_dense_and_sparse_equal_the_reference_forward_pass():
    lm = encoder(top_k=5)
    prompts = lm.prompt_ids(TEXTS, "passage", 64)
    out = lm.encode_ids(prompts)
    # the character vocabulary's word tokens are the 26 lower-case letters
    letters = [ord(c) for c in "abcdefghijklmnopqrstuvwxyz"]
    assert lm.words == [chr(i) for i in letters]
    for row, ids in enumerate(prompts):
        ids = np.asarray(ids)
        hidden = reference_hidden(CFG, checkpoint(), ids)[-1]
        np.testing.assert_allclose(out.dense[row], hidden, rtol=1e-4, atol=1e-4)
        logits = reference_logits(CFG, checkpoint(), ids)[-1]
        weights = np.log1p(np.maximum(logits[letters], 0.0))
        top = np.argsort(-weights)[:5]
        expected = {chr(letters[i]): weights[i] for i in top if weights[i] > 0}
        got = out.sparse[row]
        assert {lm.words[c]: v for c, v in zip(got.indices, got.data)}.keys() == expected.keys()
        for c, v in zip(got.indices, got.data):
            assert v == pytest.approx(expected[lm.words[c]], rel=1e-4, abs=1e-4)
    assert out.sparse.shape == (len(TEXTS), 26)
    assert out.tokens.tolist() == [len(p) for p in prompts]


def test_bucketed_padded_batches_equal_unpadded_prompts():
    lm = encoder(top_k=8, batch_size=3)  # 4 prompts: a full and a ragged batch, left padding
    prompts = lm.prompt_ids(TEXTS, "query", 64)
    assert len({len(p) for p in prompts}) > 2
    padded, single = lm.encode_ids(prompts), lm.encode_ids(prompts, bucket=None)
    np.testing.assert_allclose(padded.dense, single.dense, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(padded.sparse.toarray(), single.sparse.toarray(), atol=1e-5)


class ListTokenizer:
    """decode() of a fixed vocabulary, as a byte-level BPE tokenizer decodes single ids."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[i] for i in ids)


def test_word_vocabulary_keeps_lowercase_alphabetic_words_and_merges_spaced_forms():
    pieces = ["<s>", "cat", " cat", "Cat", " dog", "42", "ab1", "a", " ing", "  two", "x ",
              "café", ""]
    ids, columns, words = word_vocabulary(ListTokenizer(pieces), len(pieces), min_chars=2)
    assert words == ["cat", "dog", "ing", "café"]
    assert ids.tolist() == [1, 2, 4, 8, 11]
    assert columns.tolist() == [0, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="no lower-case alphabetic word tokens"):
        word_vocabulary(ListTokenizer(["A", "1"]), 2)


def test_a_word_takes_the_maximum_weight_of_its_token_ids():
    import jax.numpy as jnp

    from irjax.decoding.prompt_representations import sparse_weights

    logits = jnp.asarray([[2.0, -1.0, 5.0, 0.5]])  # ids 0, 2 -> word 0; id 1 -> 1; id 3 -> 2
    values, cols = sparse_weights(logits, jnp.asarray([0, 1, 2, 3]), jnp.asarray([0, 1, 0, 2]),
                                  3, top_k=2)
    assert cols.tolist() == [[0, 2]]
    np.testing.assert_allclose(values, [[np.log1p(5.0), np.log1p(0.5)]], rtol=1e-6)

