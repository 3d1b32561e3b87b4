"""The scaling-study tool end to end in --quick mode on a 30-document collection: two corpus sizes,
DSI (tiny T5) and the MiniLM dual encoder as subprocess jobs at matched FLOPs, then the CSV, the
plot, the plan and a resumed second invocation that trains nothing."""
from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.repo_scripts import load_tool

scaling_study = load_tool("scaling_study")
CSV_COLUMNS, ZERO_SHOT = scaling_study.CSV_COLUMNS, scaling_study.ZERO_SHOT
plot, rows_for, write_csv = scaling_study.plot, scaling_study.rows_for, scaling_study.write_csv

TOPICS = ["jaguar cat americas", "python programming language", "coffee beans roasting",
          "glacier ice valley", "violin bow strings", "photosynthesis light sugar",
          "volcano lava eruption", "bicycle pedal chain", "honey bees hive", "telescope stars lens",
          "bread yeast oven", "tides moon ocean", "chess king queen", "vaccine immune antibody",
          "desert cactus sand", "piano keys hammer", "rainbow light prism", "compass magnet north",
          "tea leaves steep", "earthquake fault plates", "owl night hunting", "paper pulp trees",
          "battery lithium charge", "cheese milk curd", "kite wind string",
          "diamond carbon pressure", "salmon river spawn", "clock gears time",
          "snow crystals winter", "maple syrup sap"]
SIZES = (15, 30)


def write_collection(root: Path) -> Path:
    """30 documents; 10 train queries and 6 test queries, one relevant document each."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": f"{t}: a note on {t}, number {i}"}) + "\n"
        for i, t in enumerate(TOPICS)))
    train = {f"tr{i}": (f"about {TOPICS[i].split()[0]}", f"d{i}") for i in range(0, 30, 3)}
    test = {f"te{i}": (f"tell me {TOPICS[i].split()[1]}", f"d{i}") for i in range(1, 30, 5)}
    (root / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in {**train, **test}.items()))
    for split, queries in (("train", train), ("test", test)):
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t1\n" for q, (_, d) in queries.items()))
    return root


def _run(args: list[str], tmp_path: Path) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "IRJAX_CACHE_DIR": str(tmp_path / "cache"),
           "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".cache" / "jax")}
    proc = subprocess.run([sys.executable, "tools/scaling_study.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and the IHDR and IEND chunks."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29])
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[str]]:
    from irjax.models.pretrained import find_minilm_dir

    try:
        find_minilm_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    tmp = tmp_path_factory.mktemp("scaling")
    data = write_collection(tmp / "tiny")
    workdir = tmp / "work"
    args = ["--quick", "--dataset", str(data), "--sizes", ",".join(map(str, SIZES)),
            "--workdir", str(workdir)]
    return workdir, _run(args, tmp), args


def test_csv_has_one_row_per_run_with_metrics(study):
    workdir, stdout, _ = study
    with open(workdir / "scaling.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert sorted((r["family"], int(r["corpus_size"])) for r in rows) == sorted(
        (f, n) for f in ("dsi", "dual_encoder") for n in SIZES)
    for row in rows:
        assert row["dataset"] == "tiny" and row["eval_queries"] == "6"
        assert row["train_queries"] == "10" and row["sampled_queries"] == "False"
        for measure in ("R@10", "nDCG@10", "RR@10"):
            assert 0.0 <= float(row[measure]) <= 1.0
        assert float(row["wall_s"]) > 0 and int(row["steps"]) >= 1
        assert Path(row["run_dir"], "metrics.json").exists()
    assert stdout.count("R@10=") == 2 * len(SIZES)  # one progress line per run


def test_dsi_and_dual_encoder_get_the_same_flop_budget(study):
    workdir, _, _ = study
    with open(workdir / "scaling.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    plan = json.loads((workdir / "plan.json").read_text())
    for size in SIZES:
        dsi, de = (next(r for r in rows if r["family"] == f and int(r["corpus_size"]) == size)
                   for f in ("dsi", "dual_encoder"))
        budget = float(dsi["budget_flops"])
        assert budget == float(de["budget_flops"]) == plan["budget_flops"]
        for row in (dsi, de):
            flops, per_step = float(row["flops"]), float(row["flops_per_step"])
            assert flops == pytest.approx(int(row["steps"]) * per_step)
            assert abs(flops - budget) <= per_step / 2  # the closest whole number of steps
            assert flops == pytest.approx(budget, rel=0.05)
        # Every dual-encoder token passes through all its matmul weights (6 N D exactly); a tiny
        # T5 step is much cheaper, so DSI gets many more steps.
        assert float(de["flops_per_step"]) == 6 * int(de["matmul_params"]) * int(de["tokens_per_step"])
        assert int(dsi["steps"]) > 10 * int(de["steps"])
        assert float(dsi["flops"]) == pytest.approx(float(de["flops"]), rel=0.05)
    for run in plan["runs"]:
        record = json.loads(Path(run["run_dir"], "scaling_run.json").read_text())
        summary = json.loads(Path(run["run_dir"], "training_summary.json").read_text())
        assert record["steps"] == summary["steps"] == run["steps"]


def test_plot_is_a_valid_png(study):
    workdir, _, _ = study
    width, height = _png_size(workdir / "scaling.png")
    assert width > 100 and height > 100


def test_a_second_invocation_reuses_every_run(study, tmp_path):
    workdir, _, args = study
    before = (workdir / "scaling.csv").read_text()
    stdout = _run(args, tmp_path)
    assert stdout.count("reused") == 2 * len(SIZES)
    assert (workdir / "scaling.csv").read_text() == before


def test_zero_shot_rows_cost_nothing_and_join_the_plot(tmp_path):
    """--zero-shot: the dual-encoder run's zero_shot/metrics.json becomes a 0-FLOP row and a
    dashed line (no training here: the job's files are written by hand)."""
    run_dir = tmp_path / "runs" / "dual_encoder" / "n30"
    for directory, model, r10 in ((run_dir, "minilm-finetuned", 0.9),
                                  (run_dir / "zero_shot", "minilm", 0.7)):
        directory.mkdir(parents=True)
        (directory / "metrics.json").write_text(json.dumps({"model": model, "metrics": {
            "R@10": r10, "nDCG@10": 0.5, "RR@10": 0.4, "R@100": 1.0}}))
    cost = {"flops_per_step": 2e9, "matmul_params": 10, "total_params": 20, "tokens_per_step": 3}
    record = {"family": "dual_encoder", "size": 30, "run_dir": str(run_dir), "steps": 5,
              "budget_flops": 1e10, "cost": cost, "wall_s": 12.0, "train_steps_per_s": 0.5}
    subset = {"sampled_queries": False, "splits": {"test": {"queries_kept": 6},
                                                   "train": {"queries_kept": 10}}}
    args = type("Args", (), {"eval_split": "test", "train_split": "train"})()
    trained, zero_shot = rows_for(record, subset, "tiny", args)
    assert (trained["flops"], trained["flops_over_budget"], trained["R@10"]) == (1e10, 1.0, 0.9)
    assert (zero_shot["family"], zero_shot["steps"], zero_shot["flops"]) == (ZERO_SHOT, 0, 0.0)
    assert zero_shot["R@10"] == 0.7 and zero_shot["wall_s"] == ""
    write_csv([trained, zero_shot], tmp_path / "scaling.csv")
    assert len((tmp_path / "scaling.csv").read_text().splitlines()) == 3
    plot([trained, zero_shot, {**trained, "corpus_size": 60}], tmp_path / "scaling.png", "t")
    assert _png_size(tmp_path / "scaling.png")[0] > 100
