"""The model-agnostic training loop: sharded init, resume, jitted steps, logging, checkpoints, eval.

Shapes come before arrays: `jax.eval_shape` of the model's init gives boxed parameter shapes,
their logical names give all shardings (train_state.py), and only then is the state
materialised, by a jit whose out_shardings put each shard on its own device. The starting state
is chosen by `resume_state` (workdir -> init checkpoint -> imported params -> scratch).

Resuming is exact: the checkpoint's `extra` holds the data iterator's position (each process's,
gathered), and the step's rng is `fold_in(step_key, state.step)`, a function of the step alone.
So N steps, a kill, and a resume produce bit-identical params to an uninterrupted run.

Loss checks lag one step so that the host fetches step s's metrics while step s+1 runs; a
NaN/Inf still stops training (NonFiniteLossError naming the step) before any later save, because
every step that saves, logs or evaluates is checked first.
"""
from __future__ import annotations

import base64
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import tqdm

from irjax.errors import ConfigError
from irjax.parallel import partitioning as pt
from irjax.paths import is_remote
from irjax.parallel.processes import allgather_json, is_logging_process
from irjax.training.checkpoints import Checkpointer
from irjax.training.metrics_writer import MetricsWriter
from irjax.training.model import TrainableModel
from irjax.training.nan_guard import check_finite
from irjax.training.optimizer import OptimizerConfig
from irjax.training.trainer_config import TrainerConfig
from irjax.training.resume import resume_state
from irjax.training.train_state import TrainState, abstract_state, merge_params, state_shardings

log = logging.getLogger(__name__)

PyTree = Any
EvalFn = Callable[[PyTree, int], Mapping[str, float]]
CHECKPOINT_SUBDIR = "checkpoints"
_ITERATOR_KEY = "data_iterator_states"


class CheckpointableIterator(Protocol):
    """What `train` reads: host-local numpy batches plus a position (like grain's iterators)."""

    def __next__(self) -> Mapping[str, np.ndarray]: ...

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...


@dataclasses.dataclass
class TrainResult:
    params: PyTree
    step: int
    metrics: dict[str, float]
    resumed_from: str  # 'workdir', 'init_checkpoint', 'imported' or 'scratch'
    start_step: int = 0
    eval_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    preempted: bool = False  # stopped early at a preemption notice, after saving


def _reached_preemption(step: int) -> bool:
    """Whether the cluster announced a preemption (JAX's sync point; False without the service).

    Every process sees it at the same step, so all of them save that step and stop together.
    """
    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # the preemption service is disabled
        return False


def _jsonable(value: Any) -> Any:
    """An iterator state as JSON: numpy scalars/arrays become Python values, bytes base64."""
    if isinstance(value, bytes):
        return {"__bytes_b64__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes_b64__"}:
            return base64.b64decode(value["__bytes_b64__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


class Trainer:
    """Trains any `TrainableModel`; see the module docstring for the guarantees.

    `config` says how (a resolved `TrainerConfig`: its `num_steps` is set); `optimizer` is an
    OptimizerConfig (resolved to the run's length; its schedule is logged as `learning_rate`) or
    a prebuilt optax transform (then pass `learning_rate_fn(step)` to log the rate). Steps are
    1-based in logs and checkpoints: step s is the state after s batches. `evaluate(params,
    step)` runs every `config.eval_every` steps and `final_evaluate(params, step)` at the end
    (else `evaluate`, unless it just ran at that step); both run on every process and return
    scalars, logged as `eval/<name>` and `final_eval/<name>`. `import_params()` returns (possibly
    partial) params merged into a fresh state; `config.init_checkpoint` (another run's checkpoint
    directory or step directory, saved with the same optimizer structure) contributes its params
    only: step 0, fresh optimizer state and data. `mesh` overrides `config.mesh_shape`.
    """

    def __init__(self, model: TrainableModel, workdir: str | os.PathLike, config: TrainerConfig,
                 optimizer: OptimizerConfig | optax.GradientTransformation, *,
                 learning_rate_fn: Callable[[int], float] | None = None,
                 mesh: Mesh | None = None,
                 import_params: Callable[[], PyTree] | None = None,
                 evaluate: EvalFn | None = None, final_evaluate: EvalFn | None = None,
                 console: Callable[[str], None] | None = tqdm.write) -> None:
        if config.num_steps is None:
            raise ValueError("TrainerConfig.num_steps is unset: resolve the run's length first "
                             "(config.resolved(steps_per_epoch)) or set num_steps")
        if is_remote(workdir):
            raise ConfigError(
                f"WORKDIR {os.fspath(workdir)} is remote, but training needs a local WORKDIR for "
                "now: metrics.jsonl is appended to and TensorBoard writes local files, neither "
                "of which an object store allows. Train into a local WORKDIR (and copy it to the "
                "bucket afterwards); data, embeddings, indexes and evaluation may be remote.")
        self.model, self.workdir, self.config = model, Path(workdir), config
        self.num_steps = config.num_steps
        if isinstance(optimizer, OptimizerConfig):
            optimizer = optimizer.resolved(self.num_steps)
            self.optimizer_config: OptimizerConfig | None = optimizer
            self.tx = optimizer.build()
            self.learning_rate_fn = learning_rate_fn or optimizer.learning_rate_at
        else:
            self.optimizer_config = None
            self.tx, self.learning_rate_fn = optimizer, learning_rate_fn
        self.mesh = mesh if mesh is not None else pt.create_mesh(*config.mesh_shape)
        self.rules = tuple(config.rules)
        self.seed, self.log_every, self.eval_every = config.seed, config.log_every, config.eval_every
        self.checkpoint_every = config.checkpoint_every
        self.init_checkpoint = config.init_checkpoint
        self.import_params = import_params
        self.evaluate, self.final_evaluate = evaluate, final_evaluate
        self.progress_bar, self.console = config.progress_bar, console

    # ---------------------------------------------------------------- building blocks

    def _keys(self) -> tuple[jax.Array, jax.Array]:
        """(init key, step key), built inside traced code: a key made on the host would be a
        single-device array that multi-process jit and device_put cannot place globally.
        Step s uses fold_in(step key, s - 1), so its rng depends on nothing but seed and s.
        With `prng_impl`, the step key is the same split of a key of that implementation."""
        init_key, step_key = jax.random.split(jax.random.key(self.seed))
        if self.config.prng_impl is not None:
            step_key = jax.random.split(jax.random.key(self.seed, impl=self.config.prng_impl))[1]
        return init_key, step_key

    def make_train_step(self, shardings: TrainState) -> Callable[..., tuple[TrainState, dict]]:
        """The jitted, state-donating step `(state, global batch) -> (state, metrics)`; trace
        it inside `pt.with_sharding_rules(self.mesh, self.rules)`."""
        model, tx = self.model, self.tx

        def step(state: TrainState, batch: dict[str, jax.Array]):
            rng = jax.random.fold_in(self._keys()[1], state.step)
            (loss, metrics), grads = jax.value_and_grad(
                lambda params: model.loss(params, batch, rng), has_aux=True)(state.params)
            metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
            return state.apply_gradients(grads, tx), metrics

        return jax.jit(step, in_shardings=(shardings, pt.batch_sharding(self.mesh)),
                       out_shardings=(shardings, pt.replicated(self.mesh)), donate_argnums=(0,))

    def starting_state(self, checkpointer: Checkpointer, example: dict[str, jax.Array]):
        """Shardings and the resumed (state, step, extra, source), allocating nothing twice;
        `example` is a global batch of the real shapes."""
        model, tx = self.model, self.tx
        with pt.with_sharding_rules(self.mesh, self.rules):
            boxed = jax.eval_shape(lambda batch: model.init_variables(self._keys()[0], batch),
                                   example)
            shardings = state_shardings(boxed, tx, self.mesh, self.rules)
            abstract = abstract_state(boxed, tx, shardings)
            init = jax.jit(lambda batch: TrainState.create(
                nn.meta.unbox(model.init_variables(self._keys()[0], batch)), tx),
                out_shardings=shardings)
            fresh_opt = jax.jit(lambda params: TrainState.create(params, tx),
                                in_shardings=(shardings.params,), out_shardings=shardings)

            def merge(fresh: TrainState, imported: PyTree) -> TrainState:
                params = jax.device_put(merge_params(fresh.params, imported), shardings.params)
                return fresh_opt(params)

            resumed = resume_state(
                checkpointer, abstract, self.init_checkpoint, self.import_params,
                lambda: init(example), merge_imported=merge,
                # a new run from another run's weights: new optimizer state and step 0
                adapt_init_checkpoint=lambda state: fresh_opt(state.params))
        return shardings, resumed

    def _checkpointer(self) -> Checkpointer:
        return Checkpointer(self.workdir / CHECKPOINT_SUBDIR, keep=self.config.keep_checkpoints,
                            save_every=self.checkpoint_every,
                            async_save=self.config.async_checkpoints)

    def initial_state(self, host_example: Mapping[str, np.ndarray]
                      ) -> tuple[TrainState, TrainState, str]:
        """(state, shardings, source) a run in this workdir starts from: its latest checkpoint,
        else the init checkpoint, imported params or scratch. For tools that drive
        `make_train_step` themselves (benchmarks, MFU); `train` does this on its own."""
        checkpointer = self._checkpointer()
        try:
            example = pt.global_batch(host_example, self.mesh)
            shardings, (state, _, _, source) = self.starting_state(checkpointer, example)
        finally:
            checkpointer.close()
        return state, shardings, source

    def _restore_iterator(self, data_iterator: CheckpointableIterator,
                          extra: Mapping[str, Any] | None) -> None:
        states = (extra or {}).get(_ITERATOR_KEY)
        if states is None:
            return
        if len(states) != jax.process_count():
            raise ValueError(
                f"the checkpoint holds data positions of {len(states)} processes but this run has "
                f"{jax.process_count()}; resume with the same number of processes, or start a new "
                "workdir with this checkpoint as init_checkpoint (the data restarts)")
        data_iterator.set_state(_from_json(states[jax.process_index()]))

    def _next_batch(self, data_iterator: CheckpointableIterator,
                    step: int) -> Mapping[str, np.ndarray]:
        try:
            return next(data_iterator)
        except StopIteration:
            raise RuntimeError(
                f"the data iterator ran out before step {step} of {self.num_steps}; make it "
                "repeat (e.g. grain's .repeat()) or lower num_steps") from None

    def _log(self, writer: MetricsWriter, step: int, metrics: Mapping[str, jax.Array],
             steps_per_sec: float) -> dict[str, float]:
        """Writes the step's metrics, its rate and speed; returns the metrics as floats."""
        fetched = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
        scalars = {**fetched, "steps_per_sec": steps_per_sec}
        if self.learning_rate_fn is not None:  # the rate this step's update used
            scalars["learning_rate"] = self.learning_rate_fn(step - 1)
        writer.write_scalars(step, scalars)
        return fetched

    def _run_eval(self, fn: EvalFn, params: PyTree, step: int, prefix: str,
                  writer: MetricsWriter) -> dict[str, float]:
        scalars = {f"{prefix}/{k}": float(v) for k, v in dict(fn(params, step)).items()}
        writer.write_scalars(step, scalars)
        return scalars

    def _final_eval(self, params: PyTree, start: int, writer: MetricsWriter) -> dict[str, float]:
        """`final_evaluate`, else `evaluate` unless the periodic eval just covered the end."""
        if self.final_evaluate is not None:
            return self._run_eval(self.final_evaluate, params, self.num_steps, "final_eval", writer)
        covered = (self.eval_every is not None and self.num_steps % self.eval_every == 0
                   and start < self.num_steps)
        if self.evaluate is None or covered:
            return {}
        return self._run_eval(self.evaluate, params, self.num_steps, "eval", writer)

    # ---------------------------------------------------------------- the loop

    def train(self, data_iterator: CheckpointableIterator,
              example_batch: Mapping[str, np.ndarray]) -> TrainResult:
        """Trains up to `num_steps`, resuming from the workdir when it holds checkpoints.

        `example_batch` is any host-local batch of the real shapes (zeros are fine); it fixes
        the shapes for init and is never trained on.
        """
        missing = [m for m in ("get_state", "set_state") if not callable(
            getattr(data_iterator, m, None))]
        if missing:
            raise TypeError(
                f"the data iterator {type(data_iterator).__name__} lacks {missing}; training "
                "checkpoints its position, so pass an iterator with get_state()/set_state() "
                "(e.g. grain's DatasetIterator)")
        mesh, num_steps = self.mesh, self.num_steps
        example = pt.global_batch(example_batch, mesh)
        checkpointer = self._checkpointer()
        writer = MetricsWriter(self.workdir, console=self.console)
        bar = None
        try:
            shardings, (state, start, extra, source) = self.starting_state(checkpointer, example)
            del example
            if int(jax.device_get(state.step)) != start:
                raise ValueError(f"checkpoint step {start} holds a state at step "
                                 f"{int(jax.device_get(state.step))}; the workdir is inconsistent")
            self._restore_iterator(data_iterator, extra)
            writer.discard_after(start)  # the steps after `start` are trained (and logged) again
            log.info("training steps %d..%d from %s", start + 1, num_steps, source)
            train_step = self.make_train_step(shardings)
            bar = tqdm(total=num_steps, initial=start, unit="step", dynamic_ncols=True,
                       disable=not (self.progress_bar and is_logging_process()))
            last: dict[str, float] = {}
            eval_metrics: dict[str, float] = {}
            pending: tuple[int, dict] | None = None
            clock, clock_step = time.perf_counter(), start
            for step in range(start + 1, num_steps + 1):
                batch = pt.global_batch(self._next_batch(data_iterator, step), mesh)
                with pt.with_sharding_rules(mesh, self.rules):
                    state, metrics = train_step(state, batch)
                if pending is not None:  # the previous step, which has finished by now
                    check_finite(*pending, checkpointer=checkpointer)
                pending = (step, metrics)
                bar.update(1)
                preempted = _reached_preemption(step)
                is_last = step == num_steps or preempted
                log_now = step % self.log_every == 0 or is_last
                save_now = step % self.checkpoint_every == 0 or is_last
                eval_now = (self.evaluate is not None and self.eval_every is not None
                            and step % self.eval_every == 0)
                if not (log_now or save_now or eval_now):
                    continue
                check_finite(step, metrics, checkpointer=checkpointer)
                pending = None
                if log_now:
                    now = time.perf_counter()
                    speed = (step - clock_step) / max(now - clock, 1e-9)
                    last = self._log(writer, step, metrics, speed)
                    bar.set_postfix(loss=f"{last['loss']:.4g}", refresh=False)
                    clock, clock_step = now, step
                if save_now:
                    extra = {_ITERATOR_KEY: allgather_json(_jsonable(data_iterator.get_state()))}
                    checkpointer.save(step, state, extra=extra, force=is_last)
                if eval_now:
                    eval_metrics = self._run_eval(self.evaluate, state.params, step, "eval", writer)
                if preempted:
                    log.warning("preemption notice at step %d: saved a checkpoint and stopped; "
                                "rerun with the same workdir to continue", step)
                    break
            if pending is not None:
                check_finite(*pending, checkpointer=checkpointer)
            bar.close()
            step = int(jax.device_get(state.step))
            if step < num_steps:  # preempted: the rerun evaluates at the end
                checkpointer.wait()
                return TrainResult(state.params, step, last, source, start, eval_metrics, True)
            eval_metrics = self._final_eval(state.params, start, writer) or eval_metrics
            checkpointer.wait()
            return TrainResult(state.params, step, last, source, start, eval_metrics)
        finally:
            if bar is not None:
                bar.close()
            checkpointer.close()
            writer.close()

