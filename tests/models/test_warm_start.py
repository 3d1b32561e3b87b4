"""Warm-started DSI (models/warm_start.py): before training, the encoder is MiniLM exactly, the
docid output rows are the dual-encoder document embeddings, and the first decoding step scores
documents by the dual encoder's cos / temperature, so trie-constrained beam search over atomic
docids ranks them exactly as exact dense search does."""
import jax
import numpy as np
import pytest

from irjax.data.docids import AtomicDocids, SemanticDocids
from irjax.data.tokenization import WordPieceTokenizer, pad_sequences
from irjax.decoding.constrained_beam_search import constrained_beam_search
from irjax.index.docid_trie import DocidTrie
from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.dual_encoder import encode_batch
from irjax.models.hf_import import load_bert_params
from irjax.models.pretrained import load_checkpoint
from irjax.models.warm_start import (EOS_DIRECTION_SCALE, WarmSeq2SeqModel, docid_output_rows,
                                     warm_decoder_config, warm_start_params)
from irjax.retrieval.generative import _make_log_prob_fn
from irjax.training.train_state import merge_params, unboxed

TEXTS = ["Glaciers carve valleys out of rock over thousands of years.",
         "Coffee is brewed from roasted beans.",
         "Violins are string instruments played with a bow.",
         "Photosynthesis turns light and carbon dioxide into sugar.",
         "The jaguar is a large cat of the Americas.",
         "Python is a programming language.",
         "Insulin regulates blood glucose levels.",
         "Neutron stars are the collapsed cores of massive stars."]
QUERIES = ["how are valleys formed", "which cat lives in america", "what lowers blood sugar"]


@pytest.fixture(scope="module")
def minilm():
    checkpoint = load_checkpoint()
    config = BertConfig.from_json(checkpoint.config_path)
    return config, load_bert_params(checkpoint.weights_path, config), \
        WordPieceTokenizer(checkpoint.directory)


def tokenize(tokenizer, texts, length=32):
    batch = pad_sequences(tokenizer.tokenize(texts, length), tokenizer.pad_id, pad_to=length)
    return batch.ids, batch.mask


def fresh_params(model, length=32):
    example = {"inputs": np.zeros((1, length), np.int32), "inputs_mask": np.ones((1, length), np.int32),
               "targets": np.ones((1, 2), np.int32), "targets_mask": np.ones((1, 2), np.int32)}
    return unboxed(model.init_variables(jax.random.key(0), example))


def warm(minilm, scheme, embeddings, layers=2):
    config, bert_params, _ = minilm
    decoder = warm_decoder_config(config, scheme.vocab_size + 128 - scheme.vocab_size % 128,
                                  num_decoder_layers=layers, dropout_rate=0.0)
    model = WarmSeq2SeqModel(decoder, bert=config)
    rows = docid_output_rows(scheme.docids(), embeddings, decoder.vocab_size)
    # What the trainer does with imported params: merge them into a fresh initialisation.
    params = merge_params(fresh_params(model), warm_start_params(decoder, bert_params, rows))
    return model, params


def dual_encoder_vectors(minilm, texts):
    config, bert_params, tokenizer = minilm
    ids, mask = tokenize(tokenizer, texts)
    return np.asarray(encode_batch(BertEncoder(config), bert_params, ids, mask))


def test_encoder_outputs_equal_minilm_before_training(minilm):
    config, bert_params, tokenizer = minilm
    scheme = AtomicDocids.build([f"d{i}" for i in range(len(TEXTS))])
    model, params = warm(minilm, scheme, dual_encoder_vectors(minilm, TEXTS))
    ids, mask = tokenize(tokenizer, QUERIES + TEXTS)
    ours = np.asarray(model.encode(params, ids, mask))
    reference = np.asarray(BertEncoder(config).apply({"params": bert_params}, ids, mask))
    np.testing.assert_array_equal(ours, reference)
    jax.tree.map(np.testing.assert_array_equal, params["encoder"], bert_params)


def test_output_rows_equal_dual_encoder_embeddings_and_first_step_is_the_dual_encoder(minilm):
    _, _, tokenizer = minilm
    doc_ids = [f"d{i}" for i in range(len(TEXTS))]
    scheme = AtomicDocids.build(doc_ids)
    docs = dual_encoder_vectors(minilm, TEXTS)
    model, params = warm(minilm, scheme, docs)
    tokens = [scheme.docid_tokens(d)[0] for d in doc_ids]
    kernel = np.asarray(params["lm_head"]["kernel"])
    np.testing.assert_allclose(kernel[:, tokens].T, docs, atol=1e-6)
    other = np.setdiff1d(np.arange(kernel.shape[1]), tokens + [1])
    assert not kernel[:, other].any()  # only docid rows and EOS start non-zero

    ids, mask = tokenize(tokenizer, QUERIES)
    queries = dual_encoder_vectors(minilm, QUERIES)
    encoded = model.encode(params, ids, mask)
    start = np.zeros((len(QUERIES), 2), np.int32)
    logits = np.asarray(model.decode(params, encoded, mask, start))
    np.testing.assert_allclose(logits[:, 0, tokens], queries @ docs.T / 0.05, atol=2e-4)
    # The second step sees the docid token's input embedding, the same for every docid: EOS
    # takes (nearly) all the probability, identically whichever document came first.
    def second_step(token):
        prefix = start.copy()
        prefix[:, 1] = token
        return np.asarray(jax.nn.log_softmax(model.decode(params, encoded, mask, prefix)[:, 1]))

    second = [second_step(t) for t in tokens[:3]]
    for other_token in second[1:]:
        np.testing.assert_allclose(other_token, second[0], atol=1e-5)
    assert (second[0][:, 1] > -1e-3).all()
    assert EOS_DIRECTION_SCALE > 10


def test_beam_search_over_atomic_docids_ranks_as_exact_dense_search(minilm):
    _, _, tokenizer = minilm
    doc_ids = [f"d{i}" for i in range(len(TEXTS))]
    scheme = AtomicDocids.build(doc_ids)
    docs = dual_encoder_vectors(minilm, TEXTS)
    model, params = warm(minilm, scheme, docs)
    beam = 5
    ids, mask = tokenize(tokenizer, QUERIES)
    cross_kv = model.cross_keys_values(params, model.encode(params, ids, mask))
    trie = DocidTrie.build(scheme.docids(), model.config.vocab_size)
    context = (params, jax.tree.map(lambda a: jax.numpy.repeat(a, beam, axis=0), cross_kv),
               jax.numpy.repeat(jax.numpy.asarray(mask), beam, axis=0))
    _, scores, doc_index = constrained_beam_search(_make_log_prob_fn(model), trie, len(QUERIES),
                                                   beam, context=context)
    dense = dual_encoder_vectors(minilm, QUERIES) @ docs.T
    np.testing.assert_array_equal(np.asarray(doc_index), np.argsort(-dense, axis=1)[:, :beam])
    assert (np.diff(np.asarray(scores), axis=1) <= 0).all()


def test_semantic_rows_are_the_mean_of_their_documents():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scheme = SemanticDocids.build([str(i) for i in range(60)], embeddings=x, num_clusters=4,
                                  per_level_tokens=True)
    tokens, rows = docid_output_rows(scheme.docids(), x, scheme.vocab_size)
    first = {d[0] for d in scheme.docids()}
    for token in first:
        members = [i for i, d in enumerate(scheme.docids()) if d[0] == token]
        mean = x[members].mean(0)
        np.testing.assert_allclose(rows[list(tokens).index(token)], mean / np.linalg.norm(mean),
                                   atol=1e-6)
    with pytest.raises(ValueError, match="one row per document"):
        docid_output_rows(scheme.docids(), x[:10], scheme.vocab_size)


def test_warm_start_refuses_mismatched_shapes(minilm):
    config, _, _ = minilm
    with pytest.raises(ValueError, match="multiple of d_kv"):
        warm_decoder_config(config, 256, d_kv=100)
    decoder = warm_decoder_config(config, 256)
    with pytest.raises(ValueError, match="d_model 384"):
        warm_start_params(decoder, None, (np.array([200]), np.ones((1, 16), np.float32)))
    with pytest.raises(ValueError, match="start/pad"):
        warm_start_params(decoder, None, (np.array([1]), np.ones((1, 384), np.float32)))
