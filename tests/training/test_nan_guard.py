"""check_finite stops at the first NaN/Inf metric with a message that says where and what to do,
and, called before saving, leaves the last good checkpoint restorable."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from irjax.training.checkpoints import Checkpointer
from irjax.training.nan_guard import NonFiniteLossError, check_finite

# Orbax coroutines from earlier failed restores may be garbage-collected during these tests.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_finite_metrics_pass():
    check_finite(3, {"loss": jnp.float32(0.25), "accuracy": np.float64(0.5), "lr": 1e-3,
                     "examples": 64, "grad_norms": jnp.ones(4), "tag": "train"})


def test_nan_loss_names_step_metric_and_value():
    with pytest.raises(NonFiniteLossError) as info:
        check_finite(12, {"accuracy": jnp.float32(0.5), "loss": jnp.float32(jnp.nan)})
    error = info.value
    assert (error.step, error.metric, error.last_good_step) == (12, "loss", None)
    assert np.isnan(error.value)
    message = str(error)
    assert "step 12" in message and "loss=nan" in message
    assert "learning rate" in message and "No checkpoint has been written yet" in message


def test_loss_is_the_headline_and_other_bad_metrics_are_listed():
    with pytest.raises(NonFiniteLossError) as info:
        check_finite(7, {"grad_norm": float("inf"), "loss": jnp.float32(-jnp.inf),
                         "per_layer": jnp.array([1.0, jnp.nan, jnp.nan])})
    assert info.value.metric == "loss"
    assert set(info.value.others) == {"grad_norm", "per_layer"}
    assert "grad_norm=inf" in str(info.value) and "2 non-finite" in str(info.value)


def test_inf_in_a_non_loss_metric_also_stops():
    with pytest.raises(NonFiniteLossError, match="step 5: grad_norm=inf"):
        check_finite(5, {"loss": 0.1, "grad_norm": np.float32(np.inf)})


def test_last_good_checkpoint_is_named_and_still_restorable(tmp_path):
    """The loop order a trainer uses: step, check_finite, then save; the NaN step is never saved."""
    good = {"w": jnp.arange(4.0)}
    with Checkpointer(tmp_path, save_every=1) as checkpointer:
        for step, loss in [(1, 0.5), (2, 0.4), (3, float("nan"))]:
            state = {"w": good["w"] * step}
            try:
                check_finite(step, {"loss": jnp.float32(loss)}, checkpointer=checkpointer)
            except NonFiniteLossError as e:
                error = e
                break
            checkpointer.save(step, state, extra={"position": step})
        assert error.step == 3 and error.last_good_step == 2
        assert "step 2" in str(error) and str(tmp_path) in str(error)
        step, restored, extra = checkpointer.restore_latest({"w": jnp.zeros(4)})
    assert (step, extra) == (2, {"position": 2})
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(4.0) * 2)
