"""The one model contract the trainer relies on (t5x's BaseModel, reduced to what training needs).

Dual encoders, XTR and DSI all implement `TrainableModel`; the trainer never branches on the kind.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol

import jax
import numpy as np

PyTree = Any
Batch = Mapping[str, np.ndarray | jax.Array]


class TrainableModel(Protocol):
    def init_variables(self, rng: jax.Array, batch: Batch) -> PyTree:
        """Parameters for a batch of this shape, still boxed with logical axis names
        (flax `LogicallyPartitioned`), so the trainer can derive shardings before allocating."""
        ...

    def loss(self, params: PyTree, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar training loss and scalar metrics, traced inside the jitted train step. `batch`
        holds global arrays sharded over 'data': reductions over the batch are global."""
        ...
