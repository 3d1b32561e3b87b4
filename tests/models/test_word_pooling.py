"""ColBERTer's whole-word pooling and keep/drop gate against hand computations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.data.tokenization import WordPieceTokenizer
from irjax.models.bert import BertConfig
from irjax.models.multi_vector import MultiVectorModel
from irjax.models.pretrained import load_checkpoint
from irjax.models.token_encoder import TokenEncoderModule, token_mask
from irjax.models.word_pooling import gate_penalty, pool_words, word_ids

TINY = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=16)
PAD, CLS, SEP = 0, 1, 2
CONTINUATION = tuple(range(40, 50))   # the "##" pieces of this toy vocabulary
SPECIAL = (PAD, CLS, SEP)
# [CLS] w(10 ##41 ##42) w(11) punct(7) w(12 ##43) [SEP] pad / [CLS] ##44 w(13) [SEP] pad...
IDS = np.array([[CLS, 10, 41, 42, 11, 7, 12, 43, SEP, PAD],
                [CLS, 44, 13, SEP, PAD, PAD, PAD, PAD, PAD, PAD]], np.int32)
MASK = (IDS != PAD).astype(np.int32)
# Words with punctuation (7) skipped; a leading continuation after [CLS] starts its own word.
WORDS = [[[1, 2, 3], [4], [6, 7]], [[1], [2]]]


def unbox(tree):
    return jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, tree,
                        is_leaf=lambda x: hasattr(x, "names"))


def test_word_ids_follow_continuation_pieces_and_skip_specials():
    keep = token_mask(IDS, MASK, (7, *SPECIAL))
    got = np.asarray(word_ids(IDS, keep, CONTINUATION))
    expected = np.full(IDS.shape, -1)
    for row, words in enumerate(WORDS):
        for w, positions in enumerate(words):
            expected[row, positions] = w
    np.testing.assert_array_equal(got, expected)


def test_word_ids_match_the_tokenizers_own_words():
    """The pre-tokenizer's word of every piece (tokenizers' Encoding.word_ids) is the reference."""
    tokenizer = WordPieceTokenizer(load_checkpoint().directory)
    texts = ["Photosynthesis turns light, water and carbon-dioxide into sugar.",
             "Unbelievably, glaciers' slow rivers (of ice) carve valleys!"]
    batch = tokenizer.encode(texts, 64)
    keep = token_mask(batch.ids, batch.mask, tokenizer.special_ids)
    got = np.asarray(word_ids(batch.ids, keep, tokenizer.continuation_ids))
    for row, enc in enumerate(tokenizer._tok.encode_batch(texts, add_special_tokens=False)):
        assert any(tokenizer._tok.id_to_token(i).startswith("##") for i in enc.ids) or row == 1
        reference = np.unique(enc.word_ids, return_inverse=True)[1]   # 0, 1, ... per word
        np.testing.assert_array_equal(got[row, 1:1 + len(enc.ids)], reference)
        assert got[row, 0] == -1 and np.all(got[row, 1 + len(enc.ids):] == -1)


def test_pool_words_is_the_mean_of_each_words_pieces():
    x = np.random.default_rng(0).normal(size=(*IDS.shape, 3)).astype(np.float32)
    wid = word_ids(IDS, token_mask(IDS, MASK, (7, *SPECIAL)), CONTINUATION)
    pooled, words = map(np.asarray, pool_words(jnp.asarray(x), wid))
    for row, row_words in enumerate(WORDS):
        for w, positions in enumerate(row_words):
            np.testing.assert_allclose(pooled[row, w], x[row, positions].mean(axis=0), rtol=1e-6)
        assert np.all(words[row, :len(row_words)] == 1) and np.all(words[row, len(row_words):] == 0)
        assert np.all(pooled[row, len(row_words):] == 0)


def test_word_vectors_are_the_normalised_mean_projection_of_their_pieces():
    module = TokenEncoderModule(TINY, dim=6)
    params = unbox(module.init(jax.random.PRNGKey(0), IDS, MASK))
    wid = word_ids(IDS, token_mask(IDS, MASK, (7, *SPECIAL)), CONTINUATION)
    out, state = module.apply(params, IDS, MASK, word_ids=wid,
                              capture_intermediates=lambda mdl, _: mdl.name == "projection")
    projection = np.asarray(state["intermediates"]["projection"]["__call__"][0])
    out = np.asarray(out)
    for row, row_words in enumerate(WORDS):
        for w, positions in enumerate(row_words):
            mean = projection[row, positions].mean(axis=0)
            np.testing.assert_allclose(out[row, w], mean / np.linalg.norm(mean), atol=1e-6)


def gated_model(**kw):
    return MultiVectorModel(TINY, dim=6, objective="colbert", temperature=0.1, doc_skip_ids=(7,),
                            dropout=False, pooling="word", continuation_ids=CONTINUATION,
                            special_ids=SPECIAL, gate=True, **kw)


def test_gate_penalty_is_the_mean_absolute_gate_over_real_words():
    gates = jnp.array([[0.5, 0.0, 2.0, 9.0], [1.5, 7.0, 7.0, 7.0]])
    words = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert float(gate_penalty(gates, words)) == pytest.approx((0.5 + 0.0 + 2.0 + 1.5) / 4)


def test_loss_adds_l1_times_the_hand_computed_gates():
    model = gated_model(gate_l1=0.3, gate_scale=10.0)
    batch = {"query_ids": IDS[:, :6], "query_mask": MASK[:, :6], "pos_ids": IDS, "pos_mask": MASK,
             "labels": np.arange(2, dtype=np.int32)}
    params = unbox(model.init_variables(jax.random.PRNGKey(0), batch))
    v = np.asarray(model.represent(params, IDS, MASK, (7,)).vectors)        # ungated (query side)
    # A gate direction that closes the first document's second word and opens its first.
    params["gate"] = {"kernel": jnp.asarray(v[0, 0] - v[0, 1]), "bias": jnp.float32(0.0)}
    loss, metrics = jax.jit(model.loss)(params, batch, jax.random.PRNGKey(1))
    hand = np.maximum(10.0 * (v @ np.asarray(params["gate"]["kernel"])), 0.0)
    real = [hand[row, :len(words)] for row, words in enumerate(WORDS)]
    penalty = np.concatenate(real).mean()
    assert 0 < (np.concatenate(real) == 0).sum() < 5   # the example has gates at 0 and above
    assert float(metrics["gate_penalty"]) == pytest.approx(penalty, rel=1e-5)
    assert float(loss) == pytest.approx(float(metrics["contrastive_loss"]) + 0.3 * penalty, rel=1e-5)
    kept = np.mean(np.concatenate(real) > 0)
    assert float(metrics["kept_fraction"]) == pytest.approx(kept)


def test_model_validates_its_reduction_options():
    with pytest.raises(ValueError, match="pooling must be one of"):
        MultiVectorModel(TINY, pooling="sentence")
    with pytest.raises(ValueError, match="continuation_ids and special_ids"):
        MultiVectorModel(TINY, pooling="word")
    with pytest.raises(ValueError, match="gate_l1"):
        gated_model(gate_l1=-1.0)
