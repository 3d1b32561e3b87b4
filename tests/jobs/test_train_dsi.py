"""The DSI job end to end through gin on a tiny collection: a tiny T5 learns the six docids well
enough to answer its training queries, and the run resumes without retraining."""
import json

import gin
import pytest

from irjax import gin_config
from tests.helpers.tiny_collection import DOCS, DSI_TINY, TEST, TRAIN, write_collection

pytestmark = pytest.mark.usefixtures("clean_gin")


@pytest.mark.parametrize("docids", ["atomic", "naive_string"])
def test_dsi_config_trains_and_answers_training_queries(tmp_path, docids):
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    # Evaluate on the *train* split: a model that learned its examples ranks their docid first.
    bindings = [f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", f"DOCIDS='{docids}'",
                "SPLIT='train'", "TrainerConfig.num_steps = 200", *DSI_TINY]
    gin_config.parse(["gin/train/dsi_mini_scifact.gin"], bindings)
    gin_config.run_job()
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["num_queries"] == len(TRAIN)
    assert metrics["metrics"]["RR@10"] > 0.9
    run = [line.split() for line in (workdir / "run.trec").read_text().splitlines()]
    assert {row[2] for row in run} <= set(DOCS)                  # only real documents
    per_query = {}
    for row in run:
        per_query.setdefault(row[0], []).append(row[2])
    assert all(len(docs) == min(4, len(DOCS)) == len(set(docs)) for docs in per_query.values())
    summary = json.loads((workdir / "training_summary.json").read_text())
    assert summary["steps"] == 200
    assert (workdir / "docids.json").exists()
    assert "dsi" in list(summary["throughput_queries_per_s"])[0]

    # Rerun on the finished workdir: restores, does not train, scores the same.
    gin.clear_config()
    gin_config.parse(["gin/train/dsi_mini_scifact.gin"], bindings)
    gin_config.run_job()
    again = json.loads((workdir / "metrics.json").read_text())
    assert again["metrics"] == metrics["metrics"]
    assert json.loads((workdir / "training_summary.json").read_text())["resumed_from"] == "workdir"


def test_dsi_refuses_a_workdir_with_other_docids(tmp_path):
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    base = [f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", "TrainerConfig.num_steps = 1", *DSI_TINY]
    gin_config.parse(["gin/train/dsi_mini_scifact.gin"], base + ["DOCIDS='atomic'"])
    gin_config.run_job()
    gin.clear_config()
    gin_config.parse(["gin/train/dsi_mini_scifact.gin"], base + ["DOCIDS='naive_string'"])
    with pytest.raises(ValueError, match="atomic"):
        gin_config.run_job()


def test_best_dsi_config_is_dsi_qg_at_small_scale():
    """dsi_scifact.gin (the contract name) holds the measured best setup: T5-small in bfloat16
    over 4 chunks per document, train queries and the QG run's pseudo queries."""
    gin_config.parse(["gin/train/dsi_scifact.gin"], ["WORKDIR='w'"])
    assert gin.query_parameter("train_dsi.t5_preset") == "small"
    assert gin.query_parameter("train_dsi.t5_overrides")["dtype"] == "bfloat16"
    assert gin.query_parameter("TrainerConfig.num_steps") == 4000
    assert gin.query_parameter("DSIData.global_batch_size") == 256
    assert gin.query_parameter("DSIData.chunks_per_doc") == 4
    assert gin.query_parameter("PSEUDO_QUERIES/macro.value") == \
        "workdir/qg_scifact/pseudo_queries.jsonl"


def test_best_dsi_config_trains_on_pseudo_queries(tmp_path):
    data = write_collection(tmp_path / "tiny")
    pseudo = tmp_path / "pseudo_queries.jsonl"
    pseudo.write_text("".join(json.dumps({"doc_id": d, "queries": [f"about {d}", f"what {d}"]})
                              + "\n" for d in DOCS))
    workdir = tmp_path / "work"
    gin_config.parse(["gin/train/dsi_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", f"PSEUDO_QUERIES='{pseudo}'",
        "TrainerConfig.num_steps = 2", *DSI_TINY, "train_dsi.t5_overrides = {'dtype': 'bfloat16'}"])
    gin_config.run_job()
    summary = json.loads((workdir / "training_summary.json").read_text())
    assert summary["t5"]["dtype"] == "bfloat16"
    assert summary["data"]["chunks_per_doc"] == 4
    assert f"pseudo_query: {2 * len(DOCS)} per epoch from {2 * len(DOCS)} examples" \
        in summary["mixture"], summary["mixture"]
    assert json.loads((workdir / "metrics.json").read_text())["num_queries"] == len(TEST)
