"""Mesh, logical shardings, sharded init and the batch helper; 8 simulated devices vs 1.

The device count is fixed when JAX starts, so the 8-device run happens in a subprocess
(sharded_step_script.py with XLA_FLAGS) that also runs the 1-device reference in the same
process; everything else runs here on a single device.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from irjax.parallel import partitioning as pt, processes
from tests.helpers.simulated_devices import max_diff, run_result_script

SCRIPT = Path(__file__).with_name("sharded_step_script.py")
TOL = 1e-5


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    return run_result_script(SCRIPT, ["--data", "4", "--model", "2", "--steps", "3", "--reference",
                                      "--error_checks"], devices=8)


def test_eight_device_steps_match_one_device(eight_devices):
    sharded, reference = eight_devices["sharded"], eight_devices["reference"]
    assert (sharded["devices"], reference["devices"]) == (8, 1)
    assert len(sharded["losses"]) == 3
    assert reference["losses"][-1] < reference["losses"][0] - 0.1  # it actually trains
    assert np.abs(np.subtract(sharded["losses"], reference["losses"])).max() < TOL
    assert max_diff(sharded["params"], reference["params"]) < TOL


def test_layout_on_the_4x2_mesh(eight_devices):
    sharded = eight_devices["sharded"]
    # ('embed', 'mlp') kernel of shape (16, 32): mlp split over the 2-way model axis.
    assert sharded["mlp_kernel_spec"] == [None, "model"]
    assert sharded["mlp_kernel_shard_shape"] == [16, 16]
    assert eight_devices["reference"]["mlp_kernel_shard_shape"] == [16, 32]
    assert sharded["batch_spec"] == ["data"]
    assert sharded["state_donated"], "the old state should be deleted after a donated step"
    # 5 with_logical_constraint calls in the forward pass (the backward pass may add more).
    assert sharded["constraints_in_hlo"] >= 5, "activation constraints did not reach the HLO"


def test_errors_that_need_several_devices(eight_devices):
    errors = eight_devices["errors"]
    assert "6 rows" in errors["global_batch"] and "multiple of 4" in errors["global_batch"]
    assert "embedding" in errors["indivisible"] and "33" in errors["indivisible"]


# ---- single-device unit tests ------------------------------------------------------------

def one_device() -> list:
    return jax.devices()[:1]


def test_create_mesh_shape_and_axis_types():
    mesh = pt.create_mesh(devices=one_device())
    assert dict(mesh.shape) == {"data": 1, "model": 1}
    assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)


def test_create_mesh_errors_say_what_to_do():
    with pytest.raises(ValueError, match="needs 2 devices but 1 exist.*XLA_FLAGS"):
        pt.create_mesh(2, 1, devices=one_device())
    with pytest.raises(ValueError, match="model=2 does not divide the 1"):
        pt.create_mesh(-1, 2, devices=one_device())
    with pytest.raises(ValueError, match="data axis size"):
        pt.create_mesh(0, 1, devices=one_device())
    with pytest.raises(ValueError, match="model axis size"):
        pt.create_mesh(1, 0, devices=one_device())
    fake = [SimpleNamespace(process_index=p, id=p * 3 + i) for p in range(2) for i in range(3)]
    with pytest.raises(ValueError, match="must divide every process's device count"):
        pt.create_mesh(3, 2, devices=fake)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_process_shard_covers_every_item_once(count):
    for items in range(0, 23):
        slices = [processes.process_shard(items, i, count) for i in range(count)]
        covered = [j for s in slices for j in range(items)[s]]
        assert covered == list(range(items))  # contiguous, in process order, no overlap
        sizes = [s.stop - s.start for s in slices]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="process_index"):
        processes.process_shard(10, count, count)


def test_process_shard_and_logging_default_to_this_process():
    assert processes.process_shard(7) == slice(0, 7)
    assert processes.is_logging_process()


def test_global_batch_shapes_and_errors():
    mesh = pt.create_mesh(devices=one_device())
    batch = pt.global_batch({"ids": np.arange(12).reshape(4, 3), "y": np.ones(4)}, mesh)
    assert batch["ids"].shape == (4, 3) and batch["y"].shape == (4,)
    assert batch["ids"].sharding.spec == P("data")
    np.testing.assert_array_equal(np.asarray(batch["ids"]), np.arange(12).reshape(4, 3))
    with pytest.raises(ValueError, match="share the leading dimension"):
        pt.global_batch({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))}, mesh)
    with pytest.raises(ValueError, match="scalar"):
        pt.global_batch({"a": np.float32(1.0)}, mesh)
    with pytest.raises(ValueError, match="not a mesh axis"):
        pt.global_batch({"a": np.zeros(4)}, mesh, axis="batch")


class Named(nn.Module):
    """Params with logical names, one without, and a constrained activation."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.with_logical_partitioning(
            nn.initializers.normal(1.0), ("embed", "mlp")), (x.shape[-1], 6))
        s = self.param("s", nn.initializers.ones_init(), (6,))
        h = nn.with_logical_constraint(x @ w * s, ("batch", "mlp"))
        return h.sum()


def test_logical_shardings_from_boxes_and_from_partition_specs():
    mesh = pt.create_mesh(devices=one_device())
    abstract = jax.eval_shape(Named().init, jax.random.key(0), jnp.ones((2, 4)))
    shardings = pt.logical_shardings(abstract, mesh)
    assert shardings["params"]["w"].spec == P(None, "model")
    assert shardings["params"]["s"].spec == P()  # unboxed, unnamed: replicated
    from_specs = pt.logical_shardings(nn.get_partition_spec(abstract), mesh)
    assert from_specs["params"]["w"].spec == P(None, "model")
    with pytest.raises(ValueError, match=r"params/w.*'mlp'.*no rule"):
        pt.logical_shardings(abstract, mesh, rules=[("embed", None)])


def test_init_sharded_returns_plain_arrays_with_matching_shardings():
    mesh = pt.create_mesh(devices=one_device())
    init = Named().init
    key, x = jax.random.key(0), jnp.ones((2, 4))
    variables, shardings = pt.init_sharded(init, mesh, pt.DEFAULT_RULES, key, x)
    leaves = jax.tree.leaves(variables, is_leaf=nn.meta.is_axis_metadata)
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
    assert jax.tree.structure(variables) == jax.tree.structure(shardings)
    for array, sharding in zip(leaves, jax.tree.leaves(shardings)):
        assert isinstance(sharding, NamedSharding) and array.sharding == sharding
    plain = nn.meta.unbox(init(key, x))
    np.testing.assert_array_equal(variables["params"]["w"], plain["params"]["w"])


def test_with_sharding_rules_turns_activation_names_into_constraints():
    mesh = pt.create_mesh(devices=one_device())
    variables = nn.meta.unbox(Named().init(jax.random.key(0), jnp.ones((2, 4))))

    def lowered() -> str:
        return jax.jit(Named().apply).lower(variables, jnp.ones((2, 4))).as_text()

    assert not nn.get_logical_axis_rules()
    assert "sharding_constraint" not in lowered()  # no mesh: constraints are no-ops
    with pt.with_sharding_rules(mesh, pt.DEFAULT_RULES):
        assert tuple(nn.get_logical_axis_rules()) == pt.DEFAULT_RULES
        text = lowered()
    assert "sharding_constraint" in text and '[{"data"}, {"model"}]' in text  # (batch, mlp)
    assert not nn.get_logical_axis_rules()
    assert jax.sharding.get_abstract_mesh().empty
