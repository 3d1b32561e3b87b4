"""Device mesh, logical-axis rules and the host-to-global batch helper for sharded training.

The mesh has two axes, ('data', 'model'). Models name their array axes logically ('batch',
'embed', 'mlp', ...) through `nn.with_logical_partitioning` / `nn.with_logical_constraint`; the
rules here map those names onto mesh axes, so the same model code runs on 1 device, on simulated
CPU devices and across processes. Devices are laid out process-major, which is what lets every
process read one contiguous slice of the global batch (`process_shard`) and hand it to
`global_batch` without any cross-process data exchange.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from irjax.parallel.processes import process_shard

MESH_AXES = ("data", "model")

LogicalRules = Sequence[tuple[str, str | None]]

# Data parallel over 'data'; the wide dimensions (vocab, mlp, heads) split over 'model';
# embed/kv/length stay whole on every device so activations need no gathers along them.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("embed", None),
    ("kv", None),
    ("length", None),
)

_SIMULATE_HINT = (
    "For simulated CPU devices set XLA_FLAGS=--xla_force_host_platform_device_count=N "
    "(and JAX_PLATFORMS=cpu) before JAX starts."
)


def create_mesh(data: int = -1, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ('data', 'model') mesh with Auto axis types; data=-1 takes all devices left after model.

    Devices are ordered by (process_index, id) and the model axis is innermost, so each process
    owns whole, contiguous rows of the data axis. Auto axes (not `jax.make_mesh`'s Explicit
    default) are what flax's logical constraints and jit's in/out shardings expect.
    """
    devices = list(jax.devices() if devices is None else devices)
    count = len(devices)
    if model < 1:
        raise ValueError(f"model axis size must be >= 1, got {model}")
    if data == -1:
        if count % model:
            raise ValueError(
                f"model={model} does not divide the {count} available devices; pick a model "
                f"size that divides {count}. {_SIMULATE_HINT}")
        data = count // model
    if data < 1:
        raise ValueError(f"data axis size must be >= 1 or -1 (all remaining devices), got {data}")
    if data * model != count:
        raise ValueError(
            f"mesh data={data} x model={model} needs {data * model} devices but {count} exist; "
            "use data=-1 to take all remaining devices, or change the mesh shape. "
            f"{_SIMULATE_HINT}")
    devices.sort(key=lambda d: (d.process_index, d.id))
    per_process: dict[int, int] = {}
    for device in devices:
        per_process[device.process_index] = per_process.get(device.process_index, 0) + 1
    if len(per_process) > 1:
        uneven = {p: n for p, n in per_process.items() if n % model}
        if uneven:
            raise ValueError(
                f"model={model} must divide every process's device count {per_process} so that "
                "model parallelism stays inside one process; lower model or add local devices")
    grid = np.empty(count, dtype=object)
    grid[:] = devices
    return Mesh(grid.reshape(data, model), MESH_AXES, axis_types=(AxisType.Auto,) * 2)


@contextlib.contextmanager
def with_sharding_rules(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Iterator[None]:
    """Sets the mesh and the logical rules while tracing, so `nn.with_logical_constraint` on
    activations becomes a real sharding constraint (outside it, constraints are no-ops).

    jit reads the rules at trace time: call (i.e. trace) jitted steps inside this context.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
        yield


def replicated(mesh: Mesh) -> NamedSharding:
    """A copy on every device: for scalars such as the loss and for small unnamed state."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """Leading (example) dimension split over `axis`, everything else whole."""
    return NamedSharding(mesh, P(axis))


def _mesh_spec(names: Sequence[str | None], rules: LogicalRules, where: str) -> P:
    known = {logical for logical, _ in rules}
    unknown = [name for name in names if name is not None and name not in known]
    if unknown:
        raise ValueError(
            f"{where}: logical axis names {unknown} have no rule; add e.g. ({unknown[0]!r}, None) "
            f"to replicate or ({unknown[0]!r}, 'model') to shard it. Rules: {list(rules)}")
    return nn.logical_to_mesh_axes(tuple(names), tuple(rules))


def _check_divisible(shape: Sequence[int], spec: P, mesh: Mesh, where: str) -> None:
    for dim, (size, axes) in enumerate(zip(shape, spec)):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        parts = math.prod(mesh.shape[a] for a in axes)
        if size % parts:
            raise ValueError(
                f"{where}: dimension {dim} of shape {tuple(shape)} has size {size}, which does not "
                f"split over mesh axes {axes} ({parts} parts); change the mesh shape or map that "
                "logical name to None in the rules")


def _path_str(path: tuple[Any, ...]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) or "<root>"


def logical_shardings(abstract_variables: Any, mesh: Mesh,
                      rules: LogicalRules = DEFAULT_RULES) -> Any:
    """NamedShardings for a variables tree: boxed leaves follow their names, the rest replicate.

    Accepts a tree with `nn.LogicallyPartitioned` boxes (real or from `jax.eval_shape`), with
    `nn.Partitioned` boxes (names are mesh axes already), or the logical PartitionSpec tree of
    `nn.get_partition_spec`. The result has the structure of the *unboxed* tree, ready for
    jit's in/out_shardings. Unknown logical names and indivisible dimensions are errors rather
    than silent replication.
    """
    def is_leaf(x: Any) -> bool:
        return isinstance(x, (nn.meta.AxisMetadata, P))

    def leaf_sharding(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        where = _path_str(path)
        if isinstance(leaf, nn.LogicallyPartitioned):
            spec = _mesh_spec(leaf.names, rules, where)
            shape = getattr(leaf.value, "shape", None)
        elif isinstance(leaf, nn.Partitioned):
            spec, shape = P(*leaf.names), getattr(leaf.value, "shape", None)
        elif isinstance(leaf, P):
            spec, shape = _mesh_spec(tuple(leaf), rules, where), None
        else:
            spec, shape = P(), None
        if shape is not None:
            _check_divisible(shape, spec, mesh, where)
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_variables, is_leaf=is_leaf)


def init_sharded(init_fn: Callable[..., Any], mesh: Mesh, rules: LogicalRules,
                 *args: Any) -> tuple[Any, Any]:
    """Creates variables directly in their final sharding: shapes first, arrays second.

    `jax.eval_shape` gives the boxed shapes without allocating, their names give the shardings,
    and `jax.jit(..., out_shardings=...)` materialises each shard on its own device, so a model
    too big for one device never exists whole. Returns (plain arrays, matching NamedShardings).
    """
    with with_sharding_rules(mesh, rules):
        abstract = jax.eval_shape(init_fn, *args)
        shardings = logical_shardings(abstract, mesh, rules)

        def unboxed_init(*inner: Any) -> Any:
            return nn.meta.unbox(init_fn(*inner))

        variables = jax.jit(unboxed_init, out_shardings=shardings)(*args)
    return variables, shardings


def _local_positions(mesh: Mesh, axis: str) -> list[int]:
    """Positions along `axis` holding at least one of this process's devices."""
    dim = mesh.axis_names.index(axis)
    here = jax.process_index()
    grid = np.moveaxis(mesh.devices, dim, 0)
    return [i for i in range(grid.shape[0])
            if any(d.process_index == here for d in grid[i].reshape(-1))]


def global_batch(host_batch: Mapping[str, np.ndarray], mesh: Mesh,
                 axis: str = "data") -> dict[str, jax.Array]:
    """Turns this process's rows into global arrays split over `axis` on their leading dim.

    THE single entry point from host data to device arrays: each process passes only the rows
    `process_shard(global_batch_size)` selects, and the global batch size is the per-host size
    times the number of processes on the data axis.
    """
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not a mesh axis; mesh axes are {mesh.axis_names}")
    positions = _local_positions(mesh, axis)
    axis_size = mesh.shape[axis]
    expected = process_shard(axis_size)
    if positions != list(range(expected.start, expected.stop)):
        raise ValueError(
            f"this process's devices sit at {axis!r} positions {positions}, not the contiguous "
            f"block {expected.start}..{expected.stop - 1} that process_shard assigns; build the "
            "mesh with create_mesh so each process owns its own block of the data axis")
    local = len(positions)
    sharding = batch_sharding(mesh, axis)
    rows: int | None = None
    out: dict[str, jax.Array] = {}
    for key, value in host_batch.items():
        array = np.asarray(value)
        if array.ndim == 0:
            raise ValueError(f"batch field {key!r} is a scalar; every field needs a leading "
                             "example dimension")
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise ValueError(f"batch field {key!r} has {array.shape[0]} rows but others have "
                             f"{rows}; all fields must share the leading dimension")
        if rows % local:
            raise ValueError(
                f"per-host batch of {rows} rows (field {key!r}) does not divide over the {local} "
                f"local devices on the {axis!r} axis; use a per-host batch size that is a "
                f"multiple of {local} (global batch a multiple of {axis_size})")
        global_shape = (rows // local * axis_size,) + array.shape[1:]
        out[key] = jax.make_array_from_process_local_data(sharding, array, global_shape)
    return out
