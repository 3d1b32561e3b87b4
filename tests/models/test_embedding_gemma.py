"""EmbeddingGemma: a tiny random sentence-transformers directory against a numpy reference
(bidirectional stack, mean pooling over padded batches, Dense projections, L2 norm), and the real
model against sentence-transformers' embeddings in tests/fixtures/lm/embeddinggemma-300m.npz
(skipped, naming what is missing, without the weights or the fixture)."""
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from irjax.errors import InputFileError
from irjax.models.embedding_gemma import load_embedding_gemma, truncate
from tests.helpers.lm_fixtures import weights_and_fixture
from tests.helpers.tiny_lm import GEMMA3, random_checkpoint, reference_hidden

TINY = dict(GEMMA3, use_bidirectional_attention=True, sliding_window=4)
MODULES = [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense"),
           ("Dense", "3_Dense"), ("Normalize", "4_Normalize")]


def write_sentence_transformer(directory: Path, seed: int = 0) -> tuple[dict, list]:
    """A tiny EmbeddingGemma-shaped directory; returns (HF tensors, Dense weights [out, in])."""
    rng = np.random.default_rng(seed)
    tensors = random_checkpoint(TINY, seed)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(TINY))
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
         for i, (kind, path) in enumerate(MODULES)]))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True,
         "include_prompt": True}))
    dense = []
    for path, (fan_in, fan_out) in (("2_Dense", (64, 128)), ("3_Dense", (128, 64))):
        (directory / path).mkdir()
        (directory / path / "config.json").write_text(json.dumps(
            {"in_features": fan_in, "out_features": fan_out, "bias": False,
             "activation_function": "torch.nn.modules.linear.Identity"}))
        weight = (rng.standard_normal((fan_out, fan_in)) * 0.2).astype(np.float32)
        save_file({"linear.weight": weight}, str(directory / path / "model.safetensors"))
        dense.append(weight)
    (directory / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "q: ", "document": "d: "}}))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    (directory / "tokenizer.json").write_text("{}")  # not read by embed_ids
    return tensors, dense


def test_tiny_model_matches_numpy_reference(tmp_path):
    tensors, dense = write_sentence_transformer(tmp_path / "eg")
    model = load_embedding_gemma(tmp_path / "eg")
    sequences = [[2, 5, 9, 11, 40, 7, 1], [2, 30, 1]]  # padded to 7 in one batch
    got = model.embed_ids(sequences)
    for row, ids in enumerate(sequences):
        pooled = reference_hidden(TINY, tensors, np.asarray(ids), causal=False).mean(0)
        for weight in dense:
            pooled = weight.astype(np.float64) @ pooled
        want = pooled / np.linalg.norm(pooled)
        np.testing.assert_allclose(got[row], want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_truncate_is_a_normalised_prefix():
    x = np.random.default_rng(0).standard_normal((3, 768)).astype(np.float32)
    for dim in (512, 256, 128):
        t = truncate(x, dim)
        assert t.shape == (3, dim)
        np.testing.assert_allclose(t * np.linalg.norm(x[:, :dim], axis=1, keepdims=True),
                                   x[:, :dim], rtol=1e-5)
    with pytest.raises(ValueError, match="trained for"):
        truncate(x, 300)


def test_refuses_other_heads(tmp_path):
    write_sentence_transformer(tmp_path / "eg")
    config = json.loads((tmp_path / "eg" / "2_Dense" / "config.json").read_text())
    config["bias"] = True
    (tmp_path / "eg" / "2_Dense" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputFileError, match="2_Dense"):
        load_embedding_gemma(tmp_path / "eg")


def test_real_model_matches_sentence_transformers():
    directory, ref, texts = weights_and_fixture("embeddinggemma-300m", "model.safetensors")
    model = load_embedding_gemma(directory)
    assert model.prompts["query"] == texts["prompts"]["query"]
    assert model.tokenize(texts["queries"], model.prompts["query"]) == texts["query_token_ids"]
    assert model.tokenize(texts["documents"], model.prompts["document"]) == texts["doc_token_ids"]
    queries = model.encode_queries(texts["queries"])
    documents = model.encode_documents(texts["documents"])
    assert np.sum(queries * ref["query_embeddings"], axis=1).min() > 0.9999
    assert np.sum(documents * ref["doc_embeddings"], axis=1).min() > 0.9999
    # Matryoshka: the truncated query/document scores still rank each query's own document first.
    small = model.encode_queries(texts["queries"], dim=128) @ \
        model.encode_documents(texts["documents"], dim=128).T
    assert (small.argmax(axis=1) == np.arange(len(small))).all()
