"""Checkpointer: exact round trip, keep-N, fallback past every kind of damaged latest step, and
kill -9 preemption of a real training subprocess ending bit-for-bit where an uninterrupted run does."""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irjax.training.checkpoints import CORRUPT_SUBDIR, Checkpointer, CheckpointRestoreError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("preemptible_train_script.py")
MULTIHOST_SCRIPT = Path(__file__).with_name("multihost_checkpoint_script.py")
LOGGER = "irjax.training.checkpoints"

# Orbax's asyncio loop reports "Event loop is closed" from a finalizer after a failed restore.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def make_state(step: int) -> dict:
    """Params big enough (64x64) that OCDBT keeps them in a separate data file, plus Adam state."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32) + step,
              "b": jnp.arange(8, dtype=jnp.bfloat16) * step}
    opt_state = optax.adam(1e-3).init(params)
    opt_state = jax.tree.map(lambda x: x + step, opt_state)
    return {"params": params, "opt_state": opt_state, "step": jnp.int32(step)}


def assert_tree_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def step_dirs(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def warnings_from_checkpointer(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_round_trip_is_exact_for_params_optimizer_state_step_and_extra(tmp_path):
    state = make_state(5)
    extra = {"epoch": 2, "position": 96, "seed": 13, "nested": {"files": ["a", "b"]}}
    with Checkpointer(tmp_path, save_every=1) as checkpointer:
        assert checkpointer.save(5, state, extra=extra)
    abstract = jax.eval_shape(lambda: make_state(0))
    with Checkpointer(tmp_path) as fresh:  # a new process would see only the files
        step, restored, restored_extra = fresh.restore_latest(abstract)
    assert step == 5
    assert restored_extra == extra
    assert_tree_equal(restored, state)
    assert type(restored["opt_state"][0]).__name__ == "ScaleByAdamState"


def test_restore_places_arrays_on_the_abstract_states_sharding(tmp_path):
    state = make_state(1)
    with Checkpointer(tmp_path, save_every=1, async_save=False) as checkpointer:
        checkpointer.save(1, state)
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
        _, restored, extra = checkpointer.restore_latest(abstract)
    assert extra == {}
    assert all(leaf.sharding == sharding for leaf in jax.tree.leaves(restored))


def test_keeps_only_the_newest_n_and_saves_every_k(tmp_path):
    with Checkpointer(tmp_path, keep=2, save_every=3) as checkpointer:
        saved = [step for step in range(1, 11) if checkpointer.save(step, make_state(step))]
        assert checkpointer.save(11, make_state(11), force=True)
        checkpointer.wait()
        assert saved == [3, 6, 9]
        assert checkpointer.all_steps() == [9, 11]
    assert step_dirs(tmp_path) == [9, 11]


def test_extra_must_be_json(tmp_path):
    with Checkpointer(tmp_path, save_every=1) as checkpointer:
        with pytest.raises(TypeError, match="int"):
            checkpointer.save(1, make_state(1), extra={"position": np.int64(3)})


def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate_data_file(step_dir: Path) -> None:
    data = _largest_file(step_dir / "state")
    os.truncate(data, data.stat().st_size // 2)


def _flip_bit_in_data(step_dir: Path) -> None:
    data = _largest_file(step_dir / "state")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    data.write_bytes(bytes(raw))


def _garbage_over(relative: str):
    def corrupt(step_dir: Path) -> None:
        path = step_dir / relative
        path.write_bytes(np.random.default_rng(1).bytes(max(path.stat().st_size, 16)))
    return corrupt


def _delete(relative: str):
    def corrupt(step_dir: Path) -> None:
        (step_dir / relative).unlink()
    return corrupt


def _empty_dir(step_dir: Path) -> None:
    shutil.rmtree(step_dir)
    step_dir.mkdir()


def _empty_files(step_dir: Path) -> None:
    for path in step_dir.rglob("*"):
        if path.is_file():
            os.truncate(path, 0)


CORRUPTIONS = {
    "truncated_data_file": _truncate_data_file,
    "bit_flip_in_array_data": _flip_bit_in_data,  # orbax restores this silently; the fingerprint catches it
    "garbage_in_ocdbt_manifest": _garbage_over("state/manifest.ocdbt"),
    "garbage_in_tree_metadata": _garbage_over("state/_METADATA"),
    "garbage_in_extra_json": _garbage_over("extra/metadata"),
    "deleted_extra_metadata_file": _delete("extra/metadata"),
    "deleted_ocdbt_manifest": _delete("state/manifest.ocdbt"),
    # Without it orbax rebuilds tuples (Adam's state) as lists, and the structure check fails.
    "deleted_tree_metadata": _delete("state/_METADATA"),
    "empty_step_dir": _empty_dir,
    "all_files_empty": _empty_files,
}


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_damaged_latest_falls_back_to_previous_and_is_moved_aside(tmp_path, caplog, how):
    with Checkpointer(tmp_path, keep=3, save_every=1, async_save=False) as checkpointer:
        for step in (1, 2):
            checkpointer.save(step, make_state(step), extra={"position": step})
    CORRUPTIONS[how](tmp_path / "2")

    caplog.set_level(logging.WARNING, logger=LOGGER)
    with Checkpointer(tmp_path, keep=3, save_every=1, async_save=False) as checkpointer:
        assert checkpointer.latest_good_step() in (1, 2)  # metadata-only check; may miss array damage
        step, state, extra = checkpointer.restore_latest(make_state(0))
        assert (step, extra) == (1, {"position": 1})
        assert_tree_equal(state, make_state(1))
        messages = warnings_from_checkpointer(caplog)
        assert any(str(tmp_path / "2") in m and "unreadable" in m for m in messages), messages
        if how == "bit_flip_in_array_data":
            assert any("fingerprint" in m for m in messages), messages
        # Moved aside, not deleted: orbax no longer lists it, and step 2 can be saved again.
        assert checkpointer.all_steps() == [1]
        assert [p.name.split(".")[0] for p in (tmp_path / CORRUPT_SUBDIR).iterdir()] == ["2"]
        assert checkpointer.save(2, make_state(22))
        assert checkpointer.restore_latest(make_state(0))[0] == 2


def test_missing_step_metadata_file_is_tolerated_because_the_data_verifies(tmp_path, caplog):
    """Orbax only warns about a missing _CHECKPOINT_METADATA (it holds timestamps/metrics)."""
    with Checkpointer(tmp_path, save_every=1, async_save=False) as checkpointer:
        checkpointer.save(1, make_state(1))
        checkpointer.save(2, make_state(2))
    (tmp_path / "2" / "_CHECKPOINT_METADATA").unlink()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with Checkpointer(tmp_path) as checkpointer:
        step, state, _ = checkpointer.restore_latest(make_state(0))
    assert step == 2
    assert_tree_equal(state, make_state(2))
    assert warnings_from_checkpointer(caplog) == []


def test_no_readable_step_raises_and_moves_nothing(tmp_path):
    with Checkpointer(tmp_path, save_every=1, async_save=False) as checkpointer:
        checkpointer.save(1, make_state(1))
        checkpointer.save(2, make_state(2))
    _empty_dir(tmp_path / "2")
    wrong_shapes = {**make_state(0), "params": {"w": jnp.zeros((3, 3)), "b": jnp.zeros(8, jnp.bfloat16)}}
    with Checkpointer(tmp_path) as checkpointer:
        with pytest.raises(CheckpointRestoreError, match="abstract state") as info:
            checkpointer.restore_latest(wrong_shapes)
        assert str(tmp_path / "2") in str(info.value) and str(tmp_path / "1") in str(info.value)
        assert checkpointer.all_steps() == [1, 2]
    assert not (tmp_path / CORRUPT_SUBDIR).exists()


def test_half_written_save_from_a_killed_process_is_invisible(tmp_path):
    with Checkpointer(tmp_path, save_every=1, async_save=False) as checkpointer:
        checkpointer.save(1, make_state(1))
    leftover = tmp_path / "2.orbax-checkpoint-tmp-1700000000000000"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "manifest.ocdbt").write_bytes(b"\0" * 10)
    with Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.restore_latest(make_state(0))[0] == 1
    assert not leftover.exists()  # cleaned up when the manager opened the directory


def test_empty_directory_restores_none(tmp_path):
    with Checkpointer(tmp_path / "new") as checkpointer:
        assert checkpointer.restore_latest(make_state(0)) is None
        assert checkpointer.latest_good_step() is None


# ---------------------------------------------------------------- kill -9 preemption


def _run_script(workdir: Path, steps: int, kill_at: tuple[str, int] | None = None) -> list[str]:
    """Runs the trainer; with kill_at=(word, n) sends SIGKILL as soon as it prints `word n`."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(ROOT / ".cache" / "jax"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "stderr.log", "ab") as stderr:
        proc = subprocess.Popen([sys.executable, str(SCRIPT), "--workdir", str(workdir), "--steps",
                                 str(steps)], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if kill_at is not None and lines[-1].split()[:2] == [kill_at[0], str(kill_at[1])]:
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.stdout.close()
        code = proc.wait(timeout=120)
    tail = (workdir / "stderr.log").read_text()[-3000:]
    if kill_at is None:
        assert code == 0 and lines[-1] == "done", tail
    else:
        assert code == -signal.SIGKILL, f"expected to kill it at {kill_at}; exit {code}: {tail}"
    return lines


def _losses(lines: list[str]) -> dict[int, float]:
    return {int(p[1]): float.fromhex(p[3]) for p in (line.split() for line in lines) if p[0] == "step"}


def _resumed_from(lines: list[str]) -> tuple[int, str]:
    word, step, source = lines[0].split()
    assert word == "resumed"
    return int(step), source


def test_kill_9_at_three_random_steps_matches_an_uninterrupted_run(tmp_path):
    steps = 30
    reference = _run_script(tmp_path / "reference", steps)
    reference_losses = _losses(reference)
    assert sorted(reference_losses) == list(range(1, steps + 1))

    rng = random.Random(20240611)
    kill_steps = sorted(rng.sample(range(4, steps - 3), 3))
    # "saved n": killed while step n's async save is in flight; "step n": killed between steps.
    kill_words = [rng.choice(["saved", "step"]) for _ in kill_steps]
    workdir, checkpoints = tmp_path / "preempted", tmp_path / "preempted" / "checkpoints"
    segments: list[list[str]] = []
    expected_resume: int | None = 0  # None: any step from the last printed "saved n" minus one on
    last_saved, damaged = 0, None
    for i, kill_at in enumerate([*zip(kill_words, kill_steps), None]):
        lines = _run_script(workdir, steps, kill_at)
        resumed, source = _resumed_from(lines)
        assert source == ("workdir" if i else "scratch")
        if expected_resume is None:  # save n-1 committed before save n started; n may be in flight
            assert resumed >= last_saved - 1, (last_saved, resumed)
        else:
            assert resumed == expected_resume
        segments.append(lines)
        if kill_at is None:
            break
        last_saved = max(int(line.split()[1]) for line in lines if line.startswith("saved"))
        expected_resume = None
        if i == 1:  # also damage the newest committed step: the next run resumes from the one before
            committed = step_dirs(checkpoints)
            damaged, expected_resume = committed[-1], committed[-2]
            _empty_files(checkpoints / str(damaged))

    for lines in segments:  # every step of every segment, replayed ones included, matches
        for step, loss in _losses(lines).items():
            assert loss == reference_losses[step], (step, loss, reference_losses[step])
    assert sorted(set().union(*(_losses(s) for s in segments))) == list(range(1, steps + 1))
    assert [p.name.split(".")[0] for p in (checkpoints / CORRUPT_SUBDIR).iterdir()] == [str(damaged)]

    expected = np.load(tmp_path / "reference" / "final_params.npz")
    actual = np.load(workdir / "final_params.npz")
    assert sorted(actual.files) == sorted(expected.files)
    for name in expected.files:
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- two processes, sharded state


def test_two_processes_agree_on_the_fallback_step_and_restore_their_own_shards(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               JAX_COMPILATION_CACHE_DIR=str(ROOT / ".cache" / "jax"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "local_multiprocess.py"), "--num_processes", "2",
         "--devices_per_process", "1", "--timeout_s", "150", "--",
         sys.executable, str(MULTIHOST_SCRIPT), str(tmp_path / "ckpt")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = {}
    for line in proc.stdout.splitlines():
        if "RESULT " in line:
            results[line.split("]")[0].lstrip("[")] = json.loads(line.split("RESULT ", 1)[1])
    assert sorted(results) == ["0", "1"], proc.stdout[-3000:]
    full = np.arange(32, dtype=np.float32).reshape(8, 4) + 1
    for process, result in results.items():
        assert (result["step"], result["extra"], result["r"]) == (1, {"position": 1}, 1.0)
        own_rows = full[4 * int(process):4 * int(process) + 4]
        np.testing.assert_array_equal(np.asarray(result["shards"][0]), own_rows)
        assert result["resaved"] and result["latest"] == 2
    assert [p.name.split(".")[0] for p in (tmp_path / "ckpt" / CORRUPT_SUBDIR).iterdir()] == ["2"]


def test_relative_directory_is_accepted(tmp_path, monkeypatch):
    """WORKDIR is usually relative (workdir/run); orbax alone rejects relative paths."""
    monkeypatch.chdir(tmp_path)
    state = {"w": jnp.arange(4.0)}
    with Checkpointer("rel/checkpoints", keep=2, save_every=1, async_save=True) as ckpt:
        assert ckpt.save(1, state, force=True)
        ckpt.wait()
        step, restored, _ = ckpt.restore_latest(state)
    assert step == 1
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert (tmp_path / "rel" / "checkpoints" / "1").is_dir()


def test_read_params_of_another_run_without_its_model_or_optimizer(tmp_path):
    from irjax.training.checkpoints import CorruptCheckpointError, read_trained_params
    from irjax.training.train_state import TrainState

    params = {"encoder": {"w": jnp.asarray(np.random.default_rng(1).normal(size=(64, 64)),
                                           jnp.float32), "b": jnp.arange(8, dtype=jnp.float32)}}
    with Checkpointer(tmp_path, save_every=1) as checkpointer:
        for step in (3, 4):
            state = TrainState.create(jax.tree.map(lambda x: x + step, params), optax.adamw(1e-3))
            checkpointer.save(step, state, extra={"step": step})
    step, read = read_trained_params(tmp_path)
    assert step == 4
    assert_tree_equal(read, jax.tree.map(lambda x: np.asarray(x + 4), params))
    assert read_trained_params(tmp_path, step=3)[0] == 3
    with pytest.raises(FileNotFoundError, match="has no step 7"):
        read_trained_params(tmp_path, step=7)
    # A flipped value in the data is caught by the save-time fingerprints.
    integrity = tmp_path / "4" / "integrity" / "metadata"
    record = json.loads(integrity.read_text())
    record["fingerprints"] = [row if not row[0].endswith("['w']") else row[:3] + [1, 2]
                              for row in record["fingerprints"]]
    integrity.write_text(json.dumps(record))
    with pytest.raises(CorruptCheckpointError, match="save-time fingerprints"):
        read_trained_params(tmp_path, step=4)
    with pytest.raises(FileNotFoundError):
        read_trained_params(tmp_path / "nowhere")
