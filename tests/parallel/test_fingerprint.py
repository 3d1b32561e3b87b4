"""The tree fingerprint behind checkpoint integrity and embedding-cache keys."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.parallel.fingerprint import (_fingerprint_leaf, _host_leaf_fingerprint, fingerprint,
                                        params_digest)


def test_fingerprint_sees_a_flipped_bit_and_a_swap_but_not_a_copy():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    flipped = x.copy()
    flipped.view(np.uint32)[2, 3] ^= 1 << 7
    swapped = x.copy()
    swapped[0, 1], swapped[0, 2] = x[0, 2], x[0, 1]
    sums = lambda a: fingerprint({"x": jnp.asarray(a)})[0][3:]  # noqa: E731
    assert sums(x.copy()) == sums(x)
    assert sums(flipped)[0] != sums(x)[0]
    assert sums(swapped)[0] == sums(x)[0] and sums(swapped)[1] != sums(x)[1]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32", "uint8", "bool", "float16"])
def test_host_fingerprint_equals_the_device_reduction(dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(37, 5, 3)) * 100).astype(dtype)
    device = [int(v) for v in jax.device_get(_fingerprint_leaf(x))]
    assert list(_host_leaf_fingerprint(np.asarray(x))) == device
    swapped = np.asarray(x).copy().reshape(-1)
    swapped[[0, 1]] = swapped[[1, 0]]
    if swapped[0] != swapped[1]:   # a swap changes the weighted sum only
        host = _host_leaf_fingerprint(swapped.reshape(x.shape))
        assert host[0] == device[0] and host[1] != device[1]


def test_params_digest_changes_with_any_value_and_not_with_a_copy():
    tree = {"a": jnp.arange(6, dtype=jnp.float32), "b": {"c": jnp.ones((2, 3), jnp.bfloat16)}}
    same = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)
    changed = {**tree, "a": tree["a"].at[5].add(1.0)}
    assert params_digest(tree) == params_digest(same)
    assert params_digest(changed) != params_digest(tree)
