"""EmbeddingGemma behind DenseRetriever: a tiny random EmbeddingGemma-shaped model ranks the tiny
collection exactly as brute-force search over the model's own query/document embeddings (each
side with its own prompt, Matryoshka prefix renormalised); the corpus cache is shared across
widths but not across prompts, lengths or weights; the real model (skipped without weights)
encodes the fixture texts through the retriever's mesh path as sentence-transformers did."""
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from irjax.data.collection import load_collection
from irjax.models.embedding_gemma import load_embedding_gemma
from irjax.models.embedding_gemma_encoder import embedding_gemma_encoders
from irjax.retrieval.dense import DenseRetriever
from irjax.retrieval.distributed import encode_texts
from irjax.retrieval.mesh_encoding import mesh_text_encoder
from tests.helpers.lm_fixtures import weights_and_fixture
from tests.helpers.tiny_collection import DOCS, TEST, TRAIN, write_collection
from tests.models.test_embedding_gemma import write_sentence_transformer

TINY_DIMS = (64, 32, 16)
OPTIONS = dict(max_length=16, batch_size=3, bucket_multiple=16, trained_dims=TINY_DIMS)


def write_tokenizer(path: Path) -> None:
    """A word-level tokenizer.json over the tiny collection's words (ids < the tiny vocab of 96)
    adding <bos> ... <eos> like Gemma's."""
    words = sorted({w for text in [*DOCS.values(), *(q for q, _ in [*TRAIN.values(),
                                                                     *TEST.values()])]
                    for w in text.lower().replace(",", " ").replace(".", " ").split()})
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, ":": 4, "q": 5, "d": 6}
    vocab.update({w: i + 7 for i, w in enumerate(words[:96 - 7]) if w not in vocab})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)])
    tok.save(str(path))


def tiny_model(directory: Path, seed: int = 0):
    write_sentence_transformer(directory, seed)
    write_tokenizer(directory / "tokenizer.json")
    return load_embedding_gemma(directory)


def normalised_prefix(x: np.ndarray, dim: int) -> np.ndarray:
    return x[:, :dim] / np.linalg.norm(x[:, :dim], axis=1, keepdims=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("egemma")
    model = tiny_model(root / "eg")
    collection = load_collection(write_collection(root / "data"), "test")
    return root, model, collection


def test_ranking_equals_exact_search_on_own_embeddings(setup, tmp_path):
    _, model, collection = setup
    query, document = embedding_gemma_encoders(model, **OPTIONS)
    texts = [d.contents for d in collection.documents]
    questions = dict(collection.queries)
    # Reference: the model's own padded-batch forward pass, each side with its own prompt.
    doc_vectors = model.embed_ids(model.tokenize(texts, "d: ", 16))
    query_vectors = model.embed_ids(model.tokenize(list(questions.values()), "q: ", 16))
    for dim in (64, 16):
        retriever = DenseRetriever(document, query_encoder=query, dim=dim, cache_dir=str(tmp_path))
        run = retriever.retrieve(collection, questions, k=len(texts))
        want = normalised_prefix(query_vectors, dim) @ normalised_prefix(doc_vectors, dim).T
        for row, qid in enumerate(questions):
            order = np.argsort(-want[row], kind="stable")
            ranked = sorted(run[qid].items(), key=lambda kv: -kv[1])
            assert [doc for doc, _ in ranked] == [collection.doc_ids[i] for i in order]
            np.testing.assert_allclose([s for _, s in ranked], want[row][order], atol=1e-5)
        np.testing.assert_allclose(retriever.encode_queries(list(questions.values())),
                                   normalised_prefix(query_vectors, dim), atol=1e-5)


def test_corpus_cache_shared_across_dims_only(setup, tmp_path):
    root, model, collection = setup
    query, document = embedding_gemma_encoders(model, **OPTIONS)
    questions = dict(collection.queries)
    wide = DenseRetriever(document, query_encoder=query, dim=64, cache_dir=str(tmp_path))
    narrow = DenseRetriever(document, query_encoder=query, dim=16, cache_dir=str(tmp_path))
    assert wide.embeddings_dir(collection) == narrow.embeddings_dir(collection)
    wide.retrieve(collection, questions, k=3)
    assert "encode_docs_per_s" in wide.timings  # encoded the corpus
    narrow.retrieve(collection, questions, k=3)
    assert "encode_docs_per_s" not in narrow.timings  # reused the 64-d shards
    assert wide.corpus_shards(collection).dim == narrow.corpus_shards(collection).dim == 64

    def cache_dir(encoder) -> Path:
        return DenseRetriever(encoder, query_encoder=query, cache_dir=str(tmp_path)
                              ).embeddings_dir(collection)

    shorter = embedding_gemma_encoders(model, **dict(OPTIONS, max_length=8))[1]
    other_weights = embedding_gemma_encoders(tiny_model(root / "eg_seed1", seed=1), **OPTIONS)[1]
    keys = {cache_dir(e) for e in (document, query, shorter, other_weights)}
    assert len(keys) == 4  # another prompt, length or model never reuses the documents' cache
    with pytest.raises(ValueError, match="trained for"):
        DenseRetriever(document, query_encoder=query, dim=48)


def test_real_model_through_retriever_path_matches_sentence_transformers():
    directory, ref, texts = weights_and_fixture("embeddinggemma-300m", "model.safetensors")
    query, document = embedding_gemma_encoders(load_embedding_gemma(directory), max_length=256,
                                               weights_digest="fixture-test")
    for encoder, key, want in ((query, "queries", ref["query_embeddings"]),
                               (document, "documents", ref["doc_embeddings"])):
        got = encode_texts(mesh_text_encoder(encoder, 2), texts[key], encoder.dim)
        assert np.sum(got * want, axis=1).min() > 0.9999
