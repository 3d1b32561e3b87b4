"""Smoke runs of the benchmark scripts in tools/: each starts, trains a step or two in its smallest
mode and reports positive, finite numbers.

Subprocesses, because both scripts pin CPU affinity and thread counts at start-up and bench_train
drives a PyTorch worker under .venv-ref. That venv does not exist in CI: there bench_train runs
with --jax-only and the sentence-transformers test is skipped with the reason.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
NO_TORCH = (f"{REF_PYTHON} not found (as in CI): bench_train ran with --jax-only, so the "
            "sentence-transformers side was not exercised")


def _run(args: list[str], timeout: float = 300) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".cache" / "jax")}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _assert_positive(values: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = values[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)


@pytest.fixture(scope="module")
def bench_train(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, bool]:
    """One smoke run of bench_train for all its tests: (JSON result, stdout, torch side ran)."""
    data = Path(os.environ.get("IRJAX_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data / "scifact" / "qrels" / "train.tsv").exists():
        pytest.skip(f"SciFact training data not found under {data}; set IRJAX_DATA_DIR")
    from irjax.models.pretrained import find_minilm_dir

    try:
        find_minilm_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    with_torch = REF_PYTHON.exists()
    out = tmp_path_factory.mktemp("bench_train") / "result.json"
    stdout = _run(["tools/bench_train.py", "--smoke", "--json", str(out)]
                  + ([] if with_torch else ["--jax-only"]))
    return json.loads(out.read_text()), stdout, with_torch


def test_bench_train_reports_irjax_throughput(bench_train: tuple[dict, str, bool]) -> None:
    result, stdout, _ = bench_train
    _assert_positive(result["irjax"], ("step_s_median", "pairs_per_s", "gflops",
                                       "fraction_of_peak", "first_step_s"))
    _assert_positive(result, ("flops_per_step",))
    _assert_positive(result["peak_gflops"], ("jnp_dot_float32",))
    assert len(result["irjax"]["step_s"]) == result["settings"]["steps"] == 1
    assert all(math.isfinite(x) for x in result["irjax"]["losses"])
    assert "pairs/s" in stdout and "irjax" in stdout


def test_bench_train_against_sentence_transformers(bench_train: tuple[dict, str, bool]) -> None:
    result, stdout, with_torch = bench_train
    if not with_torch:
        pytest.skip(NO_TORCH)
    _assert_positive(result["sentence_transformers"], ("step_s_median", "pairs_per_s", "gflops"))
    _assert_positive(result, ("ratio_irjax_over_sentence_transformers",))
    _assert_positive(result["peak_gflops"], ("torch_mm_float32",))
    # Same weights, ids and objective: with dropout off the two losses must agree.
    losses = result["eval_loss_batch0"]
    assert losses["irjax"] == pytest.approx(losses["sentence_transformers"], rel=1e-3, abs=1e-4)
    assert "ratio irjax / sentence-transformers" in stdout


def test_mfu_bert_base_smoke(tmp_path: Path) -> None:
    out = tmp_path / "mfu.json"
    stdout = _run(["tools/mfu_bert_base.py", "--smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    _assert_positive(result, ("compile_s", "step_s_median", "step_s_back_to_back", "pairs_per_s",
                              "tokens_per_s", "analytic_flops_per_step", "achieved_tflops",
                              "peak_tflops", "mfu", "measured_matmul_tflops"))
    assert result["smoke"] and result["steps_timed"] >= 1
    assert result["compute_dtype"] == "bfloat16" and result["param_dtype"] == "float32"
    assert result["xla_flops_per_step"] is None or result["xla_flops_per_step"] > 0
    assert "MFU" in stdout
