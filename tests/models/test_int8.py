"""Dynamic int8 matmuls: error within the quantisation bound, and an int8 BERT encoder close to
the float32 one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.dual_encoder import encode_batch
from irjax.models.int8 import int8_matmul, quantize_int8


def test_quantize_round_trips_within_half_a_step_and_keeps_zero_rows():
    x = jax.random.normal(jax.random.key(0), (5, 7)).at[2].set(0.0)
    q, scale = quantize_int8(x, axis=-1)
    assert q.dtype == jnp.int8 and scale.shape == (5, 1)
    assert np.all(np.abs(np.asarray(q * scale - x)) <= np.asarray(scale) / 2 + 1e-7)
    assert np.all(np.asarray(q[2]) == 0)
    assert int(np.abs(np.asarray(q)).max()) == 127  # each row's largest value uses the full range


@pytest.mark.parametrize("contract", [1, 2])
def test_int8_matmul_is_the_float_product_up_to_quantisation(contract):
    x = jax.random.normal(jax.random.key(1), (3, 4, 6, 2) if contract == 2 else (3, 4, 12))
    kernel_shape = (6, 2, 5) if contract == 2 else (12, 5)
    kernel = jax.random.normal(jax.random.key(2), kernel_shape)
    got = int8_matmul(x, kernel, contract)
    axes = tuple(range(x.ndim - contract, x.ndim))
    exact = jnp.tensordot(x, kernel, (axes, tuple(range(contract))))
    assert got.shape == exact.shape
    # |error| <= sum_k (|x_k| dw + |w_k| dx + dx dw) with dx, dw half a quantisation step
    n = int(np.prod(kernel_shape[:contract]))
    xs, ks = np.asarray(x).reshape(*x.shape[:x.ndim - contract], n), np.asarray(kernel).reshape(n, -1)
    dx = np.abs(xs).max(-1, keepdims=True) / 127 / 2
    dw = np.abs(ks).max(0) / 127 / 2
    bound = np.abs(xs).sum(-1, keepdims=True) * dw + dx * np.abs(ks).sum(0) + n * dx * dw
    error = np.abs(np.asarray(got - exact)).reshape(bound.shape)
    assert np.all(error <= bound + 1e-5) and error.max() > 0


def test_int8_encoder_stays_close_to_float32():
    config = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=32)
    ids = jax.random.randint(jax.random.key(3), (6, 20), 1, 100)
    mask = (jnp.arange(20)[None] < jnp.array([20, 15, 9, 20, 3, 12])[:, None]).astype(jnp.int32)
    params = BertEncoder(config).init(jax.random.key(4), ids, mask)["params"]
    float_vectors = encode_batch(BertEncoder(config), params, ids, mask)
    int8_vectors = encode_batch(BertEncoder(config, int8=True), params, ids, mask)
    cosine = np.sum(np.asarray(float_vectors) * np.asarray(int8_vectors), -1)
    assert cosine.min() > 0.99 and not np.allclose(float_vectors, int8_vectors, atol=1e-6)
