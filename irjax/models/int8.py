"""Dynamic int8 matmuls for CPU inference: int8 x int8 -> int32 products instead of float32 ones.

Weights are quantised per output channel and activations per row (token), both symmetric (scale =
max |value| / 127), at every call, as ONNX Runtime's and PyTorch's dynamic quantisation do; the
int32 accumulator is rescaled to float32 by the two scales. Only the dense projections use it
(attention's score and mixing products stay float). On a CPU with AVX-512 VNNI, XLA's int8 dot
ran 1.4-2.3x the float32 one at MiniLM's shapes (2048 x 384 x 1536, alternating runs); the vectors move by
quantisation noise (cosine to float32 ~0.99+; measured per model by tools/bench_encode.py).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


def quantize_int8(x: jax.Array, axis: int | tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """(int8 values, float32 scales) with x ~ values * scales, scales reduced over `axis`."""
    x = x.astype(jnp.float32)
    scale = jnp.max(jnp.abs(x), axis=axis, keepdims=True) / 127.0
    scale = jnp.where(scale > 0, scale, 1.0)  # an all-zero row or column stays zero
    return jnp.clip(jnp.round(x / scale), -127, 127).astype(jnp.int8), scale


def int8_matmul(x: jax.Array, kernel: jax.Array, contract: int = 1) -> jax.Array:
    """x [..., *in] @ kernel [*in, *out] over the last `contract` dims of x, in int8, as float32."""
    in_shape, out_shape = kernel.shape[:contract], kernel.shape[contract:]
    n_in, n_out = math.prod(in_shape), math.prod(out_shape)
    batch_shape = x.shape[:x.ndim - contract]
    x_q, x_scale = quantize_int8(x.reshape(*batch_shape, n_in), axis=-1)
    w_q, w_scale = quantize_int8(kernel.reshape(n_in, n_out), axis=0)
    acc = lax.dot_general(x_q, w_q, (((x_q.ndim - 1,), (0,)), ((), ())),
                          preferred_element_type=jnp.int32)
    y = acc.astype(jnp.float32) * x_scale * w_scale[0]
    return y.reshape(*batch_shape, *out_shape)
