"""What every irjax training pipeline shares: a global batch plan, this process's rows of it, the
grain dataset between them, and one resumable, fingerprinted iterator.

A pipeline (`DualEncoderBatches`, `Seq2SeqBatches`) says what a global step holds
(`global_rows`), how this process turns its slice of it into arrays (`materialize`), and a
`fingerprint` of everything that fixes the data order. The rest is here:

    MapDataset.range(steps_per_epoch).repeat(num_epochs)   # global step g (None: forever)
      .map_with_index(global_rows)   # g -> the global batch's rows (a pure function of seed, g)
      .map(materialize)              # this process's rows, tokenized to fixed shapes
      .to_iter_dataset(ReadOptions)  # thread prefetch; [grain worker processes]

`ResumableIterator.get_state()` is grain's position plus the pipeline's kind and fingerprint, so
it can be saved with a model checkpoint and restored into a fresh pipeline (also with another
process count) to continue the identical sequence; restoring into a differently configured
pipeline is refused. `worker_count > 0` runs `materialize` in grain worker processes: they
re-import the main module, so they need an `if __name__ == "__main__":` guard, and absl flags
are marked parsed here.
"""
from __future__ import annotations

import abc
import threading
from collections.abc import Mapping
from typing import Any, Callable

import grain
import numpy as np

STATE_VERSION = 1


class GlobalBatches(abc.ABC):
    """Base of the pipelines (module docstring). Subclasses set `kind`, and in their __init__
    call `_setup(...)`, then set `steps_per_epoch` and `fingerprint`."""

    kind: str = ""
    steps_per_epoch: int
    fingerprint: str

    def _setup(self, num_epochs: int | None, num_threads: int, prefetch: int,
               worker_count: int) -> None:
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None (forever), got {num_epochs}")
        if worker_count < 0:
            raise ValueError(f"worker_count must be >= 0 (0 = in-process), got {worker_count}")
        self.num_epochs, self.worker_count = num_epochs, worker_count
        self._read_options = grain.ReadOptions(num_threads=num_threads,
                                               prefetch_buffer_size=prefetch)
        self._epochs: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into grain worker processes: without the lock, and with an empty epoch cache."""
        state = dict(self.__dict__, _epochs={})
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _epoch(self, epoch: int, build: Callable[[int], np.ndarray]) -> np.ndarray:
        """`build(epoch)`, computed once and kept with the previous epoch's (thread-safe)."""
        with self._lock:
            if epoch not in self._epochs:
                self._epochs = {e: v for e, v in self._epochs.items() if e >= epoch - 1}
                self._epochs[epoch] = build(epoch)
            return self._epochs[epoch]

    @abc.abstractmethod
    def global_rows(self, step: int) -> Any:
        """What global step `step` holds, for every process alike."""

    @abc.abstractmethod
    def materialize(self, rows: Any) -> dict[str, np.ndarray]:
        """This process's slice of `global_rows(step)` as fixed-shape arrays."""

    @abc.abstractmethod
    def example_batch(self) -> dict[str, np.ndarray]:
        """A batch of zeros with this process's shapes and dtypes, e.g. to initialise a model."""

    def dataset(self) -> grain.IterDataset:
        """The grain pipeline of the module docstring; its iterator saves and restores its
        position."""
        steps = grain.MapDataset.range(self.steps_per_epoch).repeat(self.num_epochs)
        planned = steps.map_with_index(lambda step, _: self.global_rows(step))
        ds = planned.map(self.materialize).to_iter_dataset(self._read_options)
        if self.worker_count > 0:
            from absl import flags  # grain's workers read absl flags; unparsed flags raise there

            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.worker_count))
        return ds

    def __iter__(self) -> "ResumableIterator":
        return ResumableIterator(self)


class ResumableIterator:
    """grain's dataset iterator plus a fingerprint check, so a saved state only resumes the
    pipeline it came from (same data, seed and batch settings; the process count may differ)."""

    def __init__(self, batches: GlobalBatches):
        self.batches = batches
        self._iterator = iter(batches.dataset())

    def __iter__(self) -> "ResumableIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position: store it next to the model checkpoint."""
        return {"version": STATE_VERSION, "kind": self.batches.kind,
                "fingerprint": self.batches.fingerprint,
                "worker_count": self.batches.worker_count, "grain": self._iterator.get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continues from `state`. States saved before pipelines shared this class lack 'kind'
        (dual-encoder ones) or 'worker_count' (seq2seq ones, always 0); both still load."""
        kind = self.batches.kind
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not an irjax input-pipeline state (version {STATE_VERSION}): "
                             f"{state!r:.300}")
        saved_kind = state.get("kind", "dual_encoder")
        if saved_kind != kind:
            raise ValueError(f"this iterator state belongs to a {saved_kind!r} pipeline, not "
                             f"this {kind!r} one")
        if state.get("fingerprint") != self.batches.fingerprint:
            raise ValueError(f"this iterator state was saved by a {kind} pipeline with different "
                             "data, seed or batch settings; resuming would change the data order")
        if state.get("worker_count", 0) != self.batches.worker_count:
            raise ValueError(f"this iterator state was saved with worker_count="
                             f"{state.get('worker_count', 0)}, but this pipeline has "
                             f"worker_count={self.batches.worker_count}; grain's state layouts "
                             "differ between them")
        self._iterator.set_state(dict(state["grain"]))

    def example_batch(self) -> dict[str, np.ndarray]:
        return self.batches.example_batch()
