"""The Trainer: it trains and logs (1 device, in process), stops on NaN keeping only finite
checkpoints, matches 1 device on 8 simulated devices and on 2 processes x 4, and resumes after
kill -9 (and past a corrupted checkpoint) to exactly the params of an uninterrupted run."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from irjax.training.checkpoints import Checkpointer
from irjax.training.metrics_writer import MetricsWriter
from irjax.training.nan_guard import NonFiniteLossError
from irjax.training.optimizer import OptimizerConfig, make_optimizer
from irjax.parallel.partitioning import create_mesh
from irjax.training.train_state import state_shardings
from irjax.training.trainer import Trainer, _from_json, _jsonable
from irjax.training.trainer_config import TrainerConfig
from tests.helpers.repo_scripts import load_launcher
from tests.helpers.simulated_devices import max_diff, script_env

from .toy_train_script import ToyBatches, make_model, read_losses

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("toy_train_script.py")

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


# ---------------------------------------------------------------- in process, one device


CONFIG_KEYS = {f.name for f in dataclasses.fields(TrainerConfig)}


def toy_trainer(workdir: Path, steps: int, learning_rate: float = 0.05, **kwargs) -> Trainer:
    """The toy model's Trainer; TrainerConfig fields among `kwargs` go to the config."""
    optimizer = OptimizerConfig(learning_rate, warmup_steps=min(2, steps), weight_decay=0.01)
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_KEYS}
    config = TrainerConfig(num_steps=steps, mesh_shape=(1, 1), seed=3, progress_bar=False,
                           **settings)
    return Trainer(make_model(), workdir, config, optimizer, console=None, **kwargs)


def eval_mse(params) -> float:
    data = ToyBatches()
    pred = make_model().module.apply({"params": params}, data.x)
    return float(jnp.mean((pred - data.y) ** 2))


def event_tags(workdir: Path) -> set[tuple[str, int]]:
    """(tag, step) of every scalar in the TensorBoard event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in (workdir / "tensorboard").glob("events.out.tfevents.*"):
        raw, at = path.read_bytes(), 0
        while at < len(raw):
            (length,) = struct.unpack("<Q", raw[at:at + 8])
            event = event_pb2.Event.FromString(raw[at + 12:at + 12 + length])
            tags.update((value.tag, event.step) for value in event.summary.value)
            at += 16 + length
    return tags


def test_trains_logs_evaluates_and_checkpoints(tmp_path):
    calls = []

    def evaluate(params, step):
        calls.append(step)
        return {"mse": eval_mse(params)}

    trainer = toy_trainer(tmp_path, 20, log_every=5, eval_every=5, checkpoint_every=10,
                          evaluate=evaluate)
    data = ToyBatches()
    result = trainer.train(data, data.example())

    assert calls == [5, 10, 15, 20]  # periodic, and the last step is not evaluated twice
    assert (result.step, result.resumed_from, result.start_step) == (20, "scratch", 0)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval/mse" in r]
    assert [r["step"] for r in train] == [5, 10, 15, 20]
    assert {"loss", "mse", "grad_norm", "learning_rate", "steps_per_sec"} <= set(train[0])
    assert [r["step"] for r in evals] == [5, 10, 15, 20]
    assert evals[-1]["eval/mse"] < 0.6 * evals[0]["eval/mse"]  # it learns
    assert train[-1]["loss"] < train[0]["loss"]
    assert train[0]["learning_rate"] == pytest.approx(0.05 * 0.5 * (1 + np.cos(np.pi * 2 / 18)))
    assert result.metrics["loss"] == train[-1]["loss"]
    assert result.eval_metrics == {"eval/mse": evals[-1]["eval/mse"]}
    tags = event_tags(tmp_path)
    assert {("loss", 5), ("learning_rate", 20), ("steps_per_sec", 10), ("eval/mse", 15)} <= tags
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [10, 20]
    assert data.get_state()["served"] == 20

    # A finished run resumes at its end: nothing is trained, the final eval runs again.
    again = toy_trainer(tmp_path, 20, eval_every=5, evaluate=evaluate)
    rerun = again.train(ToyBatches(), data.example())
    assert (rerun.resumed_from, rerun.start_step, calls[-1]) == ("workdir", 20, 20)
    jax.tree.map(np.testing.assert_array_equal, rerun.params, result.params)

    # Another run starting from this one's checkpoint: its params, but step 0 (lr 0: no change).
    second = toy_trainer(tmp_path / "second", 1, learning_rate=0.0,
                         init_checkpoint=str(tmp_path / "checkpoints"))
    started = second.train(ToyBatches(), data.example())
    assert (started.resumed_from, started.start_step, started.step) == ("init_checkpoint", 0, 1)
    jax.tree.map(np.testing.assert_array_equal, started.params, result.params)


def test_nan_stops_at_its_step_and_keeps_only_earlier_checkpoints(tmp_path):
    data = ToyBatches(nan_at=5)  # step 5 is not a checkpoint step: caught by the lagged check
    trainer = toy_trainer(tmp_path, 8, log_every=4, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match="at step 5") as caught:
        trainer.train(data, data.example())
    assert (caught.value.step, caught.value.metric, caught.value.last_good_step) == (5, "loss", 4)
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4]


def test_imported_params_are_merged_into_a_fresh_state(tmp_path):
    bias = np.array([7.0], np.float32)
    trainer = toy_trainer(tmp_path, 1, learning_rate=0.0,
                          import_params=lambda: {"wo": {"bias": bias}})
    result = trainer.train(ToyBatches(), ToyBatches().example())
    assert result.resumed_from == "imported"
    np.testing.assert_array_equal(result.params["wo"]["bias"], bias)

    bad = toy_trainer(tmp_path / "bad", 1, import_params=lambda: {"wo": {"gain": bias}})
    with pytest.raises(ValueError, match="wo/gain.*do not exist in the model"):
        bad.train(ToyBatches(), ToyBatches().example())


def test_optimizer_state_is_sharded_like_the_params():
    mesh = create_mesh(1, 1, devices=jax.devices()[:1])
    def boxed_leaf(shape, names):
        return nn.LogicallyPartitioned(jax.ShapeDtypeStruct(shape, jnp.float32), names)

    boxed = {"dense": {"kernel": boxed_leaf((4, 8), ("embed", "mlp")),
                       "bias": boxed_leaf((8,), ("mlp",))}}
    tx = make_optimizer(0.1, 10, weight_decay=0.1, grad_accum_steps=2)  # clip + mask + MultiSteps
    shardings = state_shardings(boxed, tx, mesh)
    assert shardings.params["dense"]["kernel"].spec == P(None, "model")
    assert shardings.step.spec == P()
    specs = [s.spec for s in jax.tree.leaves(shardings.opt_state)]
    # Adam mu and nu, and MultiSteps' accumulated gradients: three copies of each param.
    assert specs.count(P(None, "model")) == 3 and specs.count(P("model")) == 3
    assert set(specs) == {P(None, "model"), P("model"), P()}  # counters replicate


def test_metrics_writer_sinks_and_other_processes(tmp_path):
    lines = []
    with MetricsWriter(tmp_path / "p0", console=lines.append) as writer:
        writer.write_scalars(3, {"loss": np.float32(0.5), "bad": float("nan"), "n": jnp.int32(2)})
    record = json.loads((tmp_path / "p0" / "metrics.jsonl").read_text())
    assert record == {"step": 3, "loss": 0.5, "bad": "nan", "n": 2.0}
    assert lines == ["step 3: bad=nan, loss=0.5, n=2"]
    assert {("loss", 3), ("n", 3)} <= event_tags(tmp_path / "p0")
    with pytest.raises(RuntimeError, match="closed"):
        writer.write_scalars(4, {"loss": 1.0})

    silent = MetricsWriter(tmp_path / "p1", console=lines.append, enabled=False)
    silent.write_scalars(3, {"loss": 1.0})
    silent.close()
    assert not (tmp_path / "p1").exists() and len(lines) == 1
    with MetricsWriter(tmp_path / "p2", console=None) as writer:
        with pytest.raises(ValueError, match="only scalars"):
            writer.write_scalars(1, {"v": np.ones(2)})


def test_metrics_writer_drops_replayed_steps_and_a_line_cut_by_a_kill(tmp_path):
    with MetricsWriter(tmp_path, console=None) as writer:
        for step in range(1, 6):
            writer.write_scalars(step, {"loss": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"loss": 6.0, "st')  # the kill landed mid-line
    with MetricsWriter(tmp_path, console=None) as writer:
        assert writer.discard_after(3) == 3  # steps 4, 5 and the cut line
        writer.write_scalars(4, {"loss": 40.0})
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"step": s, "loss": float(s)} for s in (1, 2, 3)] + [{"step": 4, "loss": 40.0}]


def test_iterator_states_round_trip_through_json():
    state = {"pos": np.int64(3), "blob": b"\x00\xffgrain", "rows": np.arange(3), "nested": [(1, 2)]}
    back = _from_json(json.loads(json.dumps(_jsonable(state))))
    assert back == {"pos": 3, "blob": b"\x00\xffgrain", "rows": [0, 1, 2], "nested": [[1, 2]]}


def test_bad_settings_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="eval_every=0.*None"):
        toy_trainer(tmp_path, 5, eval_every=0)
    with pytest.raises(ValueError, match="checkpoint_every=0"):
        toy_trainer(tmp_path, 5, checkpoint_every=0)
    short = toy_trainer(tmp_path, 5)
    with pytest.raises(TypeError, match=r"lacks \['get_state', 'set_state'\]"):
        short.train(iter([ToyBatches().example()] * 2), ToyBatches().example())

    class TwoBatches(ToyBatches):
        def __next__(self):
            if self.served == 2:
                raise StopIteration
            return super().__next__()

    with pytest.raises(RuntimeError, match="ran out before step 3.*repeat"):
        short.train(TwoBatches(), ToyBatches().example())


# ---------------------------------------------------------------- subprocesses


def run_toy(args: list[str], devices: int = 1, kill_at: int | None = None,
            timeout_s: float = 180) -> tuple[list[str], int]:
    """Runs the toy script; with kill_at=n sends SIGKILL once it hands out batch n."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], env=script_env(devices),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if kill_at is not None and lines[-1] == f"batch {kill_at}":
                os.kill(proc.pid, signal.SIGKILL)
                break
        code = proc.wait()
    finally:
        watchdog.cancel()
        proc.stdout.close()
    return lines, code


def result_of(lines: list[str], code: int) -> dict:
    assert code == 0, "\n".join(lines[-40:])
    found = [line for line in lines if line.startswith("RESULT ")]
    assert len(found) == 1, "\n".join(lines[-40:])
    return json.loads(found[0][len("RESULT "):])


MESH_ARGS = ["--steps", "3", "--data", "4", "--model", "2"]


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("eight")
    return result_of(*run_toy(["--workdir", str(workdir), *MESH_ARGS, "--reference"], devices=8))


def test_eight_devices_match_one_device(eight_devices):
    sharded, reference = eight_devices["sharded"], eight_devices["reference"]
    assert (sharded["devices"], reference["devices"]) == (8, 1)
    assert sharded["wi_kernel_spec"] == [None, "model"]  # really split over 'model'
    assert sorted(sharded["losses"]) == ["1", "2", "3"]
    assert max_diff(sharded["losses"], reference["losses"]) < 1e-5
    assert max_diff(sharded["params"], reference["params"]) < 1e-5
    assert max_diff(sharded["params"], {k: np.zeros_like(v) for k, v in
                                        reference["params"].items()}) > 0.1  # not trivially 0


def test_two_processes_match_one_process(eight_devices, tmp_path):
    launcher = load_launcher()
    results = launcher.launch_local(
        [sys.executable, str(SCRIPT), "--workdir", str(tmp_path), *MESH_ARGS], 2, 4,
        env=script_env(4), timeout_s=170, stream=None, cwd=str(ROOT))
    printed = [line for r in results for line in r.output if line.startswith("RESULT ")]
    assert len(printed) == 1 and any(printed[0] in r.output for r in results if r.process_id == 0)
    two = json.loads(printed[0][len("RESULT "):])["sharded"]
    one = eight_devices["sharded"]
    assert (two["processes"], two["devices"], one["processes"]) == (2, 8, 1)
    assert max_diff(two["losses"], one["losses"]) < 1e-5
    assert max_diff(two["params"], one["params"]) < 1e-5
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [3]


def corrupt_data_files(step_dir: Path) -> None:
    """Garbage over every array data file of the step's state (same sizes)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no data files under {step_dir}"
    for path in files:
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def kill_steps(seed: int, low: int, high: int, gap: int) -> list[int]:
    """Three random steps in [low, high) at least `gap` apart, so that each killed run has
    committed a new checkpoint beyond the one it resumed from."""
    rng = random.Random(seed)
    while True:
        steps = sorted(rng.sample(range(low, high), 3))
        if min(b - a for a, b in zip(steps, steps[1:])) >= gap:
            return steps


def test_kill_9_three_times_and_a_corrupt_checkpoint_resume_exactly(tmp_path):
    args = ["--steps", "20", "--checkpoint_every", "2", "--announce"]
    straight = result_of(*run_toy(["--workdir", str(tmp_path / "straight"), *args]))["sharded"]

    workdir = tmp_path / "killed"
    resumed_at = []
    for step in kill_steps(seed=11, low=5, high=20, gap=5):
        lines, code = run_toy(["--workdir", str(workdir), *args], kill_at=step)
        assert code == -signal.SIGKILL, f"not killed at batch {step}: " + "\n".join(lines[-20:])
        first_batch = next(line for line in lines if line.startswith("batch "))
        resumed_at.append(int(first_batch.split()[1]) - 1)  # batch numbers survive a resume
    assert resumed_at[0] == 0 and resumed_at[1] > 0 and resumed_at[2] > resumed_at[1]

    steps = Checkpointer(workdir / "checkpoints").all_steps()
    assert len(steps) >= 2, steps
    corrupt_data_files(workdir / "checkpoints" / str(steps[-1]))
    final = result_of(*run_toy(["--workdir", str(workdir), *args]))["sharded"]

    assert (final["resumed_from"], final["start_step"], final["step"]) == ("workdir", steps[-2], 20)
    assert any((workdir / "checkpoints" / "corrupt").iterdir())  # moved aside, not deleted
    assert max_diff(final["params"], straight["params"]) < 1e-6
    # Every step's loss (replayed steps logged last) matches: same batches in the same order.
    assert sorted(map(int, final["losses"])) == list(range(1, 21))
    assert max_diff(final["losses"], straight["losses"]) < 1e-6
    assert {str(k): v for k, v in read_losses(workdir).items()} == final["losses"]
    logged = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 21))  # replayed steps replace the killed runs' records


def test_prng_impl_changes_the_step_key_only(tmp_path):
    """The step key (dropout) takes the configured implementation; init keeps threefry, so
    parameters start the same whatever the option."""
    from irjax.choices import InvalidChoiceError

    def keys(impl):
        trainer = Trainer(make_model(), tmp_path, TrainerConfig(num_steps=1, seed=3, prng_impl=impl),
                          OptimizerConfig(learning_rate=0.1), console=None)
        return trainer._keys()

    (init, step), (rbg_init, rbg_step) = keys(None), keys("unsafe_rbg")
    assert str(jax.random.key_impl(step)) == str(jax.random.key_impl(init)) != str(jax.random.key_impl(rbg_step))
    assert "rbg" in str(jax.random.key_impl(rbg_step))
    np.testing.assert_array_equal(jax.random.key_data(rbg_init), jax.random.key_data(init))
    with pytest.raises(InvalidChoiceError, match="prng_impl='philox'"):
        TrainerConfig(num_steps=1, prng_impl="philox")
