"""The training state pytree (step, params, opt_state) and the shardings it is stored with.

The optax transform itself is not part of the state: it holds functions, not arrays, so it
would be dead weight in checkpoints and would make the state unhashable for jit. Shardings
come from the model's logical axis names for params; every optimizer-state leaf that is a copy
of a parameter (Adam moments, accumulated gradients) takes that parameter's sharding, and the
rest (counters) is replicated, as is the step.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from irjax.parallel.partitioning import DEFAULT_RULES, LogicalRules, logical_shardings, replicated

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """`step` counts completed train steps (an int32 scalar, so it lives on device and in jit)."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree

    @classmethod
    def create(cls, params: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
        """A fresh state at step 0; `params` must already be unboxed."""
        return cls(step=jnp.zeros((), jnp.int32), params=params,
                   opt_state=optimizer.init(params))

    def apply_gradients(self, grads: PyTree,
                        optimizer: optax.GradientTransformation) -> TrainState:
        updates, opt_state = optimizer.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            opt_state=opt_state)


def unboxed(tree: PyTree) -> PyTree:
    """The values inside flax axis-metadata boxes, without `unbox()`'s sharding constraint
    (which only works on arrays inside jit, not on eval_shape results or host arrays)."""
    return jax.tree.map(lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x, tree,
                        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def _path_keys(path: tuple[Any, ...]) -> tuple[Any, ...]:
    """A key path as plain values, so a params path can be found inside an opt-state path."""
    return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def mirror_param_shardings(abstract_opt_state: PyTree, abstract_params: PyTree,
                           param_shardings: PyTree, mesh: Mesh) -> PyTree:
    """Shardings for an optimizer state: a leaf whose key path *ends with* a parameter's path
    and has that parameter's shape gets the parameter's sharding; everything else replicates.

    Matching by path suffix works for any optax state (chains, masks, MultiSteps) without
    re-running `init`, which `optax.tree_map_params` needs and some transforms do not allow.
    """
    params_by_path: dict[tuple[Any, ...], tuple[tuple[int, ...], NamedSharding]] = {}
    flat_params = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    flat_shardings = jax.tree_util.tree_leaves(
        param_shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    if len(flat_params) != len(flat_shardings):
        raise ValueError(f"{len(flat_params)} params but {len(flat_shardings)} shardings; pass "
                         "the shardings derived from the same (unboxed) params tree")
    for (path, leaf), sharding in zip(flat_params, flat_shardings):
        params_by_path[_path_keys(path)] = (tuple(jnp.shape(leaf)), sharding)

    def leaf_sharding(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        keys = _path_keys(path)
        for start in range(len(keys)):
            match = params_by_path.get(keys[start:])
            if match is not None and match[0] == tuple(jnp.shape(leaf)):
                return match[1]
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_opt_state)


def state_shardings(boxed_abstract_params: PyTree, optimizer: optax.GradientTransformation,
                    mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> TrainState:
    """A TrainState of NamedShardings for params still boxed with logical names (as
    `jax.eval_shape(model.init_variables, ...)` returns them)."""
    param_shardings = logical_shardings(boxed_abstract_params, mesh, rules)
    abstract_params = unboxed(boxed_abstract_params)
    abstract_opt_state = jax.eval_shape(optimizer.init, abstract_params)
    return TrainState(step=replicated(mesh), params=param_shardings,
                      opt_state=mirror_param_shardings(abstract_opt_state, abstract_params,
                                                       param_shardings, mesh))


def abstract_state(boxed_abstract_params: PyTree, optimizer: optax.GradientTransformation,
                   shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs carrying their target shardings: what a checkpoint restores into."""
    abstract = jax.eval_shape(lambda p: TrainState.create(p, optimizer),
                              unboxed(boxed_abstract_params))
    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(
        leaf.shape, leaf.dtype, sharding=sharding), abstract, shardings)


def merge_params(fresh: PyTree, imported: Mapping[str, Any] | PyTree) -> PyTree:
    """`fresh` with every leaf that `imported` has replaced by the imported value.

    Imported trees may cover only part of the model (e.g. a pretrained encoder without a new
    head); paths the model lacks, or with another shape, are errors since silently dropping
    pretrained weights would train from scratch without notice.
    """
    imported = unboxed(imported)
    wanted = {_path_keys(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(imported)[0]}
    seen: set[tuple[Any, ...]] = set()

    def take(path: tuple[Any, ...], leaf: Any) -> Any:
        keys = _path_keys(path)
        if keys not in wanted:
            return leaf
        seen.add(keys)
        value = wanted[keys]
        if tuple(jnp.shape(value)) != tuple(jnp.shape(leaf)):
            raise ValueError(f"imported param {'/'.join(map(str, keys))} has shape "
                             f"{tuple(jnp.shape(value))} but the model's is {tuple(leaf.shape)}; "
                             "check the model config matches the imported checkpoint")
        return jnp.asarray(value, dtype=leaf.dtype)

    merged = jax.tree_util.tree_map_with_path(take, fresh)
    unknown = sorted("/".join(map(str, k)) for k in wanted.keys() - seen)
    if unknown:
        more = " ..." if len(unknown) > 5 else ""
        raise ValueError(f"imported params {unknown[:5]}{more} do not exist in the model; fix "
                         "the import's name mapping or the model config")
    return merged
