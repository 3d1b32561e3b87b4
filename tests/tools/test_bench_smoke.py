"""Smoke runs of the benchmark scripts in tools/: each starts, encodes a few documents or trains a
step or two in its smallest mode, and reports positive, finite numbers.

Subprocesses, because the scripts pin CPU affinity and thread counts at start-up and the
sentence-transformers benchmarks drive a PyTorch worker under .venv-ref. That venv does not exist
in CI: there bench_train runs with --jax-only and the sentence-transformers test is skipped with
the reason; bench_encode is always smoke-tested with --jax-only.
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


def _skip_without_scifact_and_minilm(scifact_file: str) -> None:
    data = Path(os.environ.get("IRJAX_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data / "scifact" / scifact_file).exists():
        pytest.skip(f"scifact/{scifact_file} not found under {data}; set IRJAX_DATA_DIR")
    from irjax.models.pretrained import find_minilm_dir

    try:
        find_minilm_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def bench_train(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, bool]:
    """One smoke run of bench_train for all its tests: (JSON result, stdout, torch side ran)."""
    _skip_without_scifact_and_minilm("qrels/train.tsv")
    with_torch = REF_PYTHON.exists()
    out = tmp_path_factory.mktemp("bench_train") / "result.json"
    stdout = _run(["tools/bench_train.py", "--smoke", "--json", str(out), "--grad-cache-tokens", "16"]
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
    assert result["cpu"].startswith("CPU: ") and result["cpu"] in stdout


def test_bench_train_times_grad_cache_with_the_plain_loss(bench_train: tuple[dict, str, bool]) -> None:
    result, stdout, _ = bench_train
    _assert_positive(result["irjax_grad_cache"], ("step_s_median", "pairs_per_s"))
    _assert_positive(result, ("ratio_grad_cache_over_plain",))
    losses = result["eval_loss_batch0"]  # same MiniLM weights, dropout off: GradCache changes nothing
    assert losses["irjax_grad_cache"] == pytest.approx(losses["irjax"], abs=1e-5)
    assert "GradCache / plain" in stdout


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
    stdout = _run(["tools/mfu_bert_base.py", "--smoke", "--out", str(out),
                   "--options", "baseline,flash"])
    result = json.loads(out.read_text())
    assert [run["label"] for run in result["runs"]] == ["baseline", "baseline+flash"]
    assert result["runs"][1]["efficiency"] == {"attention": "fused"}  # no cuDNN on CPU
    assert all(run["mfu"] > 0 and math.isfinite(run["final_loss"]) for run in result["runs"])
    _assert_positive(result, ("compile_s", "step_s_median", "step_s_back_to_back", "examples_per_s",
                              "tokens_per_s", "analytic_flops_per_step", "achieved_tflops",
                              "peak_tflops", "mfu", "measured_matmul_tflops"))
    assert result["smoke"] and result["steps_timed"] >= 1
    assert result["compute_dtype"] == "bfloat16" and result["param_dtype"] == "float32"
    assert result["xla_flops_per_step"] is None or result["xla_flops_per_step"] > 0
    assert "MFU" in stdout


def test_mfu_t5_smoke(tmp_path: Path) -> None:
    """The T5 counterpart: T5-tiny, each option on top of the previous, MFU per row."""
    out = tmp_path / "mfu_t5.json"
    stdout = _run(["tools/mfu_t5.py", "--smoke", "--out", str(out), "--options", "baseline,remat_full"])
    result = json.loads(out.read_text())
    assert result["model"] == "T5-tiny" and result["inputs_length"] == 16
    assert [run["label"] for run in result["runs"]] == ["baseline", "baseline+remat_full"]
    assert result["runs"][1]["config"]["remat"] == "full"
    for run in result["runs"]:
        _assert_positive(run, ("mfu", "step_s_median", "examples_per_s", "analytic_flops_per_step"))
        assert math.isfinite(run["final_loss"])
    assert "MFU" in stdout


def test_profile_step_smoke(tmp_path: Path) -> None:
    """Every sub-step is compiled and timed, the groups are reported, and the trace is written."""
    out, trace = tmp_path / "profile.json", tmp_path / "trace"
    stdout = _run(["tools/profile_step.py", "--smoke", "--out", str(out), "--trace", str(trace)])
    result = json.loads(out.read_text())
    assert set(result["pieces"]) == {
        "host transfer", "encoder forward", "forward", "forward+backward",
        "forward+backward, no dropout", "attention", "clipping", "optimizer (with clipping)",
        "whole step"}
    assert all(p["ms"] > 0 for p in result["pieces"].values())
    assert result["pieces"]["forward+backward"]["xla_gflop"] > result["pieces"]["forward"]["xla_gflop"]
    assert set(result["groups_ms"]) >= {"encoder forward", "encoder backward", "optimizer",
                                        "dropout RNG + masks", "host transfer", "other"}
    assert result["cpu"].startswith("CPU: ") and "whole step" in stdout
    assert any(path.is_file() for path in trace.rglob("*"))  # the profiler trace


def test_bench_encode_jax_only_reports_throughput(tmp_path: Path) -> None:
    """bench_encode without .venv-ref: 8 SciFact documents cut at 32 tokens, one timed round."""
    _skip_without_scifact_and_minilm("corpus.jsonl")
    out = tmp_path / "encode.json"
    stdout = _run(["tools/bench_encode.py", "--jax-only", "--docs", "8", "--max-length", "32",
                   "--batch-size", "4", "--repeats", "1", "--matmul-n", "256", "--threads", "1",
                   "--numerics", "float32,bfloat16,int8", "--json", str(out)], timeout=240)
    result = json.loads(out.read_text())
    for name in ("bfloat16", "int8"):  # reduced precision: timed, and close to float32 but not equal
        variant = result["irjax_numerics"][name]
        _assert_positive(variant, ("tokens_per_s", "speedup_over_float32"))
        assert 0.95 < variant["cosine_min"] < 1.0 - 1e-7 and variant["cosine_mean"] >= variant["cosine_min"]
    assert result["docs"] == 8 and result["settings"]["jax_only"] and result["platform"] == "cpu"
    assert 8 <= result["tokens"] <= 8 * 32  # real tokens, at most max length per document
    irjax = result["irjax"]
    _assert_positive(irjax, ("seconds_median", "tokens_per_s", "gflops", "fraction_of_peak",
                             "warmup_s", "tokenize_s", "forward_s", "forward_unsliced_s"))
    assert irjax["tokens_per_s"] == pytest.approx(result["tokens"] / irjax["seconds_median"])
    assert len(irjax["rounds_s"]) == 1
    assert irjax["reencode_max_abs_diff"] < 1e-5  # encoding the same texts again gives the same vectors
    _assert_positive(result["peak_gflops"], ("jnp_dot_float32", "numpy_float32"))
    _assert_positive(result["flops"], ("useful", "executed"))
    assert result["flops"]["executed"] >= result["flops"]["useful"]  # padding only adds work
    assert result["peak_gflops"]["torch_mm_float32"] is None and "sentence_transformers" not in result
    # The setup line names the documents, threads, platform and jax version; no torch column.
    header = stdout.splitlines()[0]
    assert header.startswith("8 SciFact docs") and "1 threads; cpu, jax " in header, header
    assert "tokens/s" in stdout and "ratio irjax / sentence-transformers" not in stdout


def test_bench_encode_peers_smoke(tmp_path: Path) -> None:
    """Every side at every precision encodes, with its cosine to irjax float32 (needs .venv-ref
    with ONNX Runtime and OpenVINO: `make bench-peers-setup`; absent in CI, so skipped there)."""
    _skip_without_scifact_and_minilm("corpus.jsonl")
    probe = subprocess.run([str(REF_PYTHON), "-c", "import onnxruntime, openvino"],
                           capture_output=True) if REF_PYTHON.exists() else None
    if probe is None or probe.returncode:
        pytest.skip(f"{REF_PYTHON} with onnxruntime and openvino not found (as in CI); "
                    "make bench-peers-setup")
    out = tmp_path / "peers.json"
    stdout = _run(["tools/bench_encode_peers.py", "--smoke", "--json", str(out)], timeout=600)
    result = json.loads(out.read_text())
    assert set(result["sides"]) == {f"irjax:{n}" for n in ("float32", "bfloat16", "int8")} | {
        f"peer:{n}" for n in ("torch", "onnx", "onnx_int8", "openvino", "openvino_bf16")}
    for key, side in result["sides"].items():
        _assert_positive(side, ("tokens_per_s", "gflops"))
        assert side["cosine_to_irjax_float32"]["min"] > 0.9, key
    for key in ("peer:torch", "peer:onnx", "peer:openvino"):  # same float32 model, same vectors
        assert result["sides"][key]["cosine_to_irjax_float32"]["min"] > 0.9999, key
    assert set(result["ratios"]) == {"float32", "bfloat16", "int8"} and "irjax / best peer" in stdout
