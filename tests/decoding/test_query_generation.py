"""generate_queries: the one-position decoder matches T5.decode, the token rules (pad and
undecodable ids never, EOS not before min_length) hold, output is a pure function of the seed,
every document gets its count of queries, decoding stops at EOS, and the key/value cache samples
the same queries as recomputing the prefix."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.data.collection import Document
from irjax.data.tokenization import SentencePieceTokenizer
from irjax.decoding.query_generation import (decode_samples, document_texts, generate_queries,
                                             query_log_prob_fn, query_step_fn)
from irjax.decoding.sampling import sample_sequences, sample_sequences_with_state
from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import EOS_ID, PAD_ID, T5Config

MODEL = Seq2SeqModel(T5Config.preset("tiny", dropout_rate=0.0))
DOCS = {"a": "The jaguar is a large cat native to the Americas.",
        "b": "Coffee is brewed from roasted coffee beans.",
        "c": "Glaciers are slow rivers of ice that carve valleys.",
        "d": "Violins are string instruments played with a bow.",
        "e": "Photosynthesis turns light into sugar."}
SETTINGS = dict(max_length=8, inputs_max_length=16, batch_size=2)


@pytest.fixture(scope="module")
def tokenizer():
    return SentencePieceTokenizer()


@pytest.fixture(scope="module")
def params():
    batch = {"inputs": jnp.ones((1, 16), jnp.int32), "inputs_mask": jnp.ones((1, 16), jnp.int32),
             "targets": jnp.ones((1, 8), jnp.int32)}
    return nn.unbox(jax.jit(MODEL.init_variables)(jax.random.key(3), batch))


def _context(params, tokenizer, rows):
    batch = tokenizer.encode([DOCS["a"]] * rows, 16, pad_to=16)
    return params, jax.jit(MODEL.encode)(params, batch.ids, batch.mask), jnp.asarray(batch.mask)


def test_one_position_logits_match_the_full_decoder(params, tokenizer):
    context = _context(params, tokenizer, 2)
    ids = jnp.asarray([[0, 5, 9, 13, 0, 0], [0, 7, 7, 2, 4, 0]], jnp.int32)
    full = jax.jit(MODEL.decode)(*context, ids)
    fn = jax.jit(query_log_prob_fn(MODEL, tokenizer.vocab_size, EOS_ID, 1))
    for step in (0, 2, 4):
        got = np.asarray(fn(ids, jnp.int32(step), context))
        want = np.asarray(full[:, step])
        finite = np.isfinite(got)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


def test_token_rules(params, tokenizer):
    context = _context(params, tokenizer, 1)
    ids = jnp.zeros((1, 4), jnp.int32)
    fn = jax.jit(query_log_prob_fn(MODEL, tokenizer.vocab_size, EOS_ID, 2))
    for step in range(4):
        logits = np.asarray(fn(ids, jnp.int32(step), context))[0]
        assert logits[PAD_ID] == -np.inf
        assert (logits[tokenizer.vocab_size:] == -np.inf).all()   # T5's padded rows
        assert np.isfinite(logits[2:tokenizer.vocab_size]).all()
        assert np.isfinite(logits[EOS_ID]) == (step >= 2)         # min_length=2
    with pytest.raises(ValueError, match="decodable_vocab"):
        query_log_prob_fn(MODEL, MODEL.config.vocab_size + 1, EOS_ID, 1)


def test_counts_order_and_determinism(params, tokenizer):
    first = generate_queries(MODEL, params, DOCS, tokenizer, 3, seed=0, **SETTINGS)
    assert list(first) == list(DOCS)                    # every document, in order (5 = 2+2+1 pad)
    assert all(len(q) == 3 and all(isinstance(s, str) and s for s in q) for q in first.values())
    assert generate_queries(MODEL, params, DOCS, tokenizer, 3, seed=0, **SETTINGS) == first
    assert generate_queries(MODEL, params, DOCS, tokenizer, 3, seed=1, **SETTINGS) != first
    as_documents = [Document(k, "", v) for k, v in DOCS.items()]
    assert generate_queries(MODEL, params, as_documents, tokenizer, 3, seed=0, **SETTINGS) == first


def test_greedy_gives_one_query_per_document(params, tokenizer):
    out = generate_queries(MODEL, params, DOCS, tokenizer, 2, top_k=1, seed=5, **SETTINGS)
    assert all(q[0] == q[1] for q in out.values())


def test_eos_ends_a_query_and_is_not_allowed_early(params, tokenizer):
    # A decoder whose final norm outputs zeros gives all-equal logits; top_k=1 then picks the
    # lowest allowed id: unk (2) while EOS is forbidden, EOS (1) from step min_length on.
    flat = jax.tree_util.tree_map(lambda x: x, params)
    flat["decoder"]["final_norm"]["scale"] = jnp.zeros_like(flat["decoder"]["final_norm"]["scale"])
    context = _context(flat, tokenizer, 2)
    state = (flat, MODEL.init_decode_cache(*context, 6))
    for min_length in (0, 3):
        rules = (MODEL, tokenizer.vocab_size, EOS_ID, min_length)
        want = [2] * min_length + [EOS_ID] + [PAD_ID] * (5 - min_length)
        for tokens, lengths in (
                sample_sequences(query_log_prob_fn(*rules), jax.random.PRNGKey(0), 2, 1, 6,
                                 top_k=1, context=context),
                sample_sequences_with_state(query_step_fn(*rules), state, jax.random.PRNGKey(0),
                                            2, 1, 6, top_k=1)):
            np.testing.assert_array_equal(np.asarray(tokens)[:, 0], [want, want])
            np.testing.assert_array_equal(np.asarray(lengths), [[min_length + 1]] * 2)
    nonblank = generate_queries(MODEL, flat, DOCS, tokenizer, 3, top_k=1, **SETTINGS)
    assert all(q == ["⁇"] * 3 for q in nonblank.values())  # unk, then EOS (min_length=1)


@pytest.mark.parametrize("sampling", [{"top_k": 10}, {"top_k": None, "top_p": 0.9},
                                      {"top_k": 5, "temperature": 0.7, "min_length": 8}])
def test_cache_samples_the_same_queries(params, tokenizer, sampling):
    cached = generate_queries(MODEL, params, DOCS, tokenizer, 4, seed=2, **SETTINGS, **sampling)
    recomputed = generate_queries(MODEL, params, DOCS, tokenizer, 4, seed=2, use_cache=False,
                                  **SETTINGS, **sampling)
    assert cached == recomputed
    assert len({q for qs in cached.values() for q in qs}) > 10        # diverse, not one string


def test_decode_samples_stops_at_eos(tokenizer):
    hello = tokenizer.tokenize(["hello world"], 16, add_eos=False)[0].tolist()
    tokens = np.zeros((1, 2, 8), np.int32)
    tokens[0, 0, :len(hello) + 2] = hello + [EOS_ID, 55]   # text after EOS is ignored
    tokens[0, 1, :] = (hello * 8)[:8]                      # never ended: kept whole
    (row,) = decode_samples(tokens, tokenizer)
    assert row[0] == "hello world"
    assert row[1].startswith("hello world") and len(row[1]) > len("hello world")


def test_bad_inputs(params, tokenizer):
    with pytest.raises(ValueError, match="twice"):
        document_texts([Document("a", "", "x"), Document("a", "", "y")])
    with pytest.raises(ValueError, match="num_queries_per_doc"):
        generate_queries(MODEL, params, DOCS, tokenizer, 0)
