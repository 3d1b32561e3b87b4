"""DecoderLM.attention_mass (the attention output option ICR reads) equals the same sum computed
from the dense float64 numpy reference's softmax probabilities, over a fresh cache and over a
cached prefix with left padding; Gemma 3's sliding layers included."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.decoder_lm import DecoderLM, init_cache
from irjax.models.lm_import import config_from_hf, convert_state_dict
from tests.helpers.tiny_lm import GEMMA3, LLAMA, random_checkpoint, reference_hidden


def reference_mass(cfg: dict, tensors: dict, ids: np.ndarray, first: int,
                   weights: np.ndarray) -> np.ndarray:
    """sum over layers, heads and rows q >= first of weights[q - first] x P[q, k]: [T]."""
    attentions: list = []
    reference_hidden(cfg, tensors, ids, attentions=attentions)
    return sum(np.einsum("hqk,q->k", probs[:, first:], weights) for probs in attentions)


@pytest.mark.parametrize("cfg", [LLAMA, GEMMA3], ids=["llama", "gemma3"])
def test_attention_mass_equals_dense_reference(cfg):
    tensors = random_checkpoint(cfg, seed=3)
    config = config_from_hf(cfg)
    model = DecoderLM(config)
    params = convert_state_dict(tensors, config)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg["vocab_size"], 11)
    prefix, rest = ids[:7], ids[7:]
    weights = rng.random(len(rest))

    # one pass over the whole sequence, every row weighted
    all_weights = rng.random(len(ids))
    # jitted: one compile per shape instead of one per primitive in eager mode
    attention_mass = jax.jit(lambda *a: model.apply({"params": params}, *a,
                                                     method=DecoderLM.attention_mass))
    mass, _ = attention_mass(jnp.asarray(ids[None]), init_cache(config, 1, 16),
                             jnp.asarray(all_weights[None]))
    expected = reference_mass(cfg, tensors, ids, 0, all_weights)
    np.testing.assert_allclose(np.asarray(mass)[0, :len(ids)], expected, rtol=2e-4, atol=2e-5)
    assert np.all(np.asarray(mass)[0, len(ids):] == 0)  # unwritten slots get nothing

    # a cached prefix, then the last tokens with two pads in front (weights 0 on the pads)
    _, cache = jax.jit(lambda *a: model.apply({"params": params}, *a,
                                              method=DecoderLM.extend))(
        jnp.asarray(prefix[None]), init_cache(config, 1, 16))
    padded = np.concatenate([[0, 0], rest])[None]
    mask = np.concatenate([[0, 0], np.ones(len(rest), int)])[None]
    w = np.concatenate([[0.0, 0.0], weights])[None]
    mass, _ = attention_mass(jnp.asarray(padded), cache, jnp.asarray(w), jnp.asarray(mask))
    mass = np.asarray(mass)[0]
    expected = reference_mass(cfg, tensors, ids, len(prefix), weights)
    np.testing.assert_allclose(mass[:len(prefix)], expected[:len(prefix)], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(mass[len(prefix) + 2:len(ids) + 2], expected[len(prefix):],
                               rtol=2e-4, atol=2e-5)
    assert np.all(mass[len(prefix):len(prefix) + 2] == 0)  # pads are never attended to
    # each weighted row's probabilities sum to 1 per head and layer
    total = config.num_layers * config.num_heads * weights.sum()
    np.testing.assert_allclose(mass.sum(), total, rtol=1e-5)
