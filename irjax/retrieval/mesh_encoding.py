"""Encoding many texts data-parallel over a device mesh, with results that do not depend on the
mesh: the same vectors, bit for bit, on 1 device, 8 devices or 2 processes x 4 devices.

Why they can be identical: a text's vector depends only on the computation its own row goes
through. Here every row is padded to its *own* bucket width (its token count rounded up to
`bucket_multiple`), rows of one width form batches of `per_device_batch` rows on every device
(the last batch of a width is filled with copies of its first row, dropped afterwards), and each
device runs the unchanged single-device function on its block (`jax.shard_map` over 'data').
So a row meets the same shapes and the same program however many devices share the work; only
the throughput changes. (Batches cut from one sorted list, as `TextEncoder.encode` does, pad a
row to whatever its neighbours need, which changes its float rounding.)

Each process encodes its own texts on the devices it owns (a process-local mesh: no
cross-process communication while encoding); `jax.process_count()` processes together cover
every device of the job.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from irjax.data.batching import round_up
from irjax.data.tokenization import pad_sequences
from irjax.models.dual_encoder import encode_in_slices
from irjax.parallel.partitioning import create_mesh
from irjax.parallel.processes import host_copy

DeviceFn = Callable[[Any, jax.Array, jax.Array], Any]


def local_mesh(model: int = 1) -> Mesh:
    """A ('data', 'model') mesh over this process's own devices."""
    return create_mesh(-1, model, devices=jax.local_devices())


@dataclasses.dataclass(frozen=True)
class WidthBatch:
    """Rows (positions in the input) encoded together at one padded width."""

    rows: np.ndarray  # int64 [k], k <= batch rows
    width: int


def width_batches(lengths: np.ndarray, rows_per_batch: int, multiple: int,
                  max_length: int) -> list[WidthBatch]:
    """Rows grouped by their own rounded width, widest first, cut into batches in input order."""
    widths = np.array([round_up(int(n), multiple, max_length) for n in lengths], np.int64)
    out = []
    for width in sorted(set(widths.tolist()), reverse=True):
        members = np.flatnonzero(widths == width)
        for start in range(0, len(members), rows_per_batch):
            out.append(WidthBatch(members[start:start + rows_per_batch], int(width)))
    return out


class MeshEncoder:
    """Runs `device_fn(params, ids, mask)` (single-device code, batch-leading outputs) over the
    'data' axis of `mesh`; see the module docstring. `params` are replicated on every device."""

    def __init__(self, device_fn: DeviceFn, params: Any, *, pad_id: int,
                 tokenize: Callable[[list[str], int], list[np.ndarray]], max_length: int,
                 per_device_batch: int = 32, bucket_multiple: int = 32,
                 mesh: Mesh | None = None):
        if per_device_batch < 1:
            raise ValueError(f"per_device_batch must be >= 1, got {per_device_batch}")
        self.mesh = mesh if mesh is not None else local_mesh()
        if self.mesh.shape.get("model", 1) != 1:
            raise ValueError("MeshEncoder runs data parallel: build the mesh with model=1 (the "
                             "encoders irjax serves fit on one device)")
        self.data_devices = int(self.mesh.shape["data"])
        self.batch_rows = per_device_batch * self.data_devices
        self.pad_id, self.tokenize, self.max_length = pad_id, tokenize, max_length
        self.bucket_multiple = bucket_multiple
        self.params = jax.device_put(host_copy(params), NamedSharding(self.mesh, P()))
        self._run = jax.jit(jax.shard_map(
            device_fn, mesh=self.mesh, in_specs=(P(), P("data"), P("data")),
            out_specs=P("data"), check_vma=False))

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
               ) -> tuple[list[Any], list[WidthBatch]]:
        """Host outputs per batch (rows beyond the batch's own dropped) and the batches, so the
        caller places row j of output i at input position `batches[i].rows[j]`.
        `on_batch(n)` is told each time n more texts are done."""
        seqs = self.tokenize(list(texts), self.max_length)
        lengths = np.fromiter((len(s) for s in seqs), np.int64, count=len(seqs))
        batches = width_batches(lengths, self.batch_rows, self.bucket_multiple, self.max_length)
        sharding = NamedSharding(self.mesh, P("data"))
        outputs: list[Any] = []
        pending: Any = None
        for batch in batches:
            members = [seqs[int(r)] for r in batch.rows]
            members += [members[0]] * (self.batch_rows - len(members))
            padded = pad_sequences(members, self.pad_id, pad_to=batch.width)
            ids, mask = (jax.device_put(x, sharding) for x in (padded.ids, padded.mask))
            result = self._run(self.params, ids, mask)
            if pending is not None:  # fetch the previous batch while this one runs
                outputs.append(_fetch(*pending, on_batch))
            pending = (result, batch)
        if pending is not None:
            outputs.append(_fetch(*pending, on_batch))
        return outputs, batches


def _fetch(result: Any, batch: WidthBatch, on_batch: Callable[[int], None] | None) -> Any:
    host = jax.tree.map(lambda x: np.asarray(x)[:len(batch.rows)], result)
    if on_batch is not None:
        on_batch(len(batch.rows))
    return host


def pooled_vectors(outputs: list[np.ndarray], batches: list[WidthBatch], count: int,
                   dim: int) -> np.ndarray:
    """float32 [count, dim] in input order from `MeshEncoder.encode`'s per-batch vectors."""
    out = np.zeros((count, dim), np.float32)
    for vectors, batch in zip(outputs, batches):
        out[batch.rows] = vectors
    return out


def text_encoder_fn(encoder: Any) -> DeviceFn:
    """The per-device function of a `TextEncoder`: its pooled, normalised forward pass (with its
    CPU micro-batch slicing, which changes speed, not results)."""
    return functools.partial(encode_in_slices, encoder.encode_batch,
                             tokens=encoder.micro_batch_tokens)


def mesh_text_encoder(encoder: Any, per_device_batch: int = 32,
                      mesh: Mesh | None = None) -> MeshEncoder:
    """A `MeshEncoder` for a `TextEncoder` (same tokenizer, length, buckets and weights)."""
    return MeshEncoder(text_encoder_fn(encoder), encoder.params, pad_id=encoder.tokenizer.pad_id,
                       tokenize=encoder.tokenizer.tokenize, max_length=encoder.max_length,
                       per_device_batch=per_device_batch,
                       bucket_multiple=encoder.bucket_multiple, mesh=mesh)
