"""resume_state: workdir > init checkpoint > imported weights > scratch, each used only when the
earlier sources are absent, and a present-but-broken source raises instead of falling through."""
from __future__ import annotations

import logging
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from irjax.training.checkpoints import Checkpointer, CheckpointRestoreError
from irjax.training.resume import resume_state

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def state(value: float) -> dict:
    return {"params": {"w": jnp.full((2, 3), value)}, "opt": {"count": jnp.int32(value)}}


ABSTRACT = state(0.0)


def never(*_):
    raise AssertionError("a later source was consulted although an earlier one was available")


def value_of(s: dict) -> float:
    return float(np.asarray(s["params"]["w"])[0, 0])


def save(directory, step: int, value: float, extra=None) -> None:
    with Checkpointer(directory, save_every=1, async_save=False) as checkpointer:
        checkpointer.save(step, state(value), extra=extra)


@pytest.fixture
def workdir(tmp_path):
    with Checkpointer(tmp_path / "work", save_every=1) as checkpointer:
        yield checkpointer


def test_workdir_checkpoint_wins(tmp_path, workdir):
    save(tmp_path / "work", 40, 4.0, extra={"position": 7})
    save(tmp_path / "init", 9, 9.0)
    state_, step, extra, source = resume_state(workdir, ABSTRACT, str(tmp_path / "init"), never, never)
    assert (source, step, extra, value_of(state_)) == ("workdir", 40, {"position": 7}, 4.0)


def test_init_checkpoint_when_workdir_is_empty(tmp_path, workdir, caplog):
    save(tmp_path / "init", 9, 9.0, extra={"position": 3})
    caplog.set_level(logging.INFO, logger="irjax.training.resume")
    adapted = []

    def adapt(s):
        adapted.append(value_of(s))
        return {**s, "opt": {"count": jnp.int32(0)}}

    state_, step, extra, source = resume_state(workdir, ABSTRACT, tmp_path / "init", never, never,
                                               adapt_init_checkpoint=adapt)
    assert (source, step, extra, value_of(state_)) == ("init_checkpoint", 0, None, 9.0)
    assert adapted == [9.0] and int(state_["opt"]["count"]) == 0
    assert any("init_checkpoint" in r.getMessage() and "no checkpoints" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_init_checkpoint_can_name_one_step_directory(tmp_path, workdir):
    save(tmp_path / "init", 5, 5.0)
    save(tmp_path / "init", 9, 9.0)
    state_, step, _, source = resume_state(workdir, ABSTRACT, tmp_path / "init" / "5", never, never)
    assert (source, step, value_of(state_)) == ("init_checkpoint", 0, 5.0)


def test_damaged_init_checkpoint_step_is_a_restore_error_naming_it(tmp_path, workdir):
    save(tmp_path / "init", 5, 5.0)
    shutil.rmtree(tmp_path / "init" / "5" / "state")
    with pytest.raises(CheckpointRestoreError, match=r"init checkpoint .*/init/5 could not be restored"):
        resume_state(workdir, ABSTRACT, tmp_path / "init" / "5", never, never)


def test_imported_weights_are_merged_into_a_fresh_state(workdir):
    calls = []

    def merge(fresh, weights):
        calls.append((value_of(fresh), float(weights["w"][0, 0])))
        return {**fresh, "params": weights}

    state_, step, extra, source = resume_state(
        workdir, ABSTRACT, None, lambda: {"w": jnp.full((2, 3), 7.0)}, lambda: state(1.0),
        merge_imported=merge)
    assert (source, step, extra, value_of(state_)) == ("imported", 0, None, 7.0)
    assert calls == [(1.0, 7.0)]


def test_scratch_when_nothing_else_is_given(workdir, caplog):
    caplog.set_level(logging.INFO, logger="irjax.training.resume")
    state_, step, extra, source = resume_state(workdir, ABSTRACT, None, None, lambda: state(2.0))
    assert (source, step, extra, value_of(state_)) == ("scratch", 0, None, 2.0)
    message = caplog.records[-1].getMessage()
    assert "scratch" in message and "none given" in message


def test_damaged_latest_workdir_step_still_resumes_from_the_workdir(tmp_path, workdir):
    save(tmp_path / "work", 1, 1.0)
    save(tmp_path / "work", 2, 2.0)
    shutil.rmtree(tmp_path / "work" / "2" / "state")
    state_, step, _, source = resume_state(workdir, ABSTRACT, None, None, never)
    assert (source, step, value_of(state_)) == ("workdir", 1, 1.0)


def test_unreadable_workdir_raises_instead_of_restarting_from_scratch(tmp_path, workdir):
    save(tmp_path / "work", 1, 1.0)
    shutil.rmtree(tmp_path / "work" / "1" / "state")
    with pytest.raises(CheckpointRestoreError, match="could be restored"):
        resume_state(workdir, ABSTRACT, None, None, never)


def test_missing_init_checkpoint_raises(tmp_path, workdir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resume_state(workdir, ABSTRACT, tmp_path / "nowhere", None, never)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no committed checkpoint"):
        resume_state(workdir, ABSTRACT, tmp_path / "empty", None, never)
