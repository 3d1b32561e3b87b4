"""The DSI job end to end through gin on a tiny collection: a tiny T5 learns the six docids well
enough to answer its training queries, and the run resumes without retraining."""
import json

import gin
import pytest

from irjax import gin_config
from irjax.errors import ConfigError
from tests.helpers.runs import run_order
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


def test_best_dsi_config_is_the_warm_started_model():
    """dsi_scifact.gin (the contract name) holds the measured best setup: DSI warm-started from
    the fine-tuned dual encoder, trained on the documents' starts, labelled queries and spans."""
    gin_config.parse(["gin/train/dsi_scifact.gin"], ["WORKDIR='w'"])
    assert gin.query_parameter("WarmStart.encoder") == "dual_encoder"
    assert gin.query_parameter("WarmStart.output_rows") is True
    assert gin.query_parameter("DUAL_ENCODER/macro.value") == "workdir/minilm_scifact"
    assert gin.query_parameter("DSIData.spans_per_doc") == 10
    assert gin.query_parameter("train_dsi.beam_size") == 100
    with pytest.raises(ValueError):
        gin.query_parameter("DSIData.pseudo_queries")  # generated queries are not in it


def test_small_dsi_qg_config_is_t5_small_from_scratch():
    """dsi_qg_small_scifact.gin: the accelerator-scale DSI-QG setup, every weight from scratch."""
    gin_config.parse(["gin/train/dsi_qg_small_scifact.gin"], ["WORKDIR='w'"])
    assert gin.query_parameter("train_dsi.t5_preset") == "small"
    assert gin.query_parameter("train_dsi.t5_overrides")["dtype"] == "bfloat16"
    assert gin.query_parameter("TrainerConfig.num_steps") == 4000
    assert gin.query_parameter("DSIData.global_batch_size") == 256
    assert gin.query_parameter("DSIData.chunks_per_doc") == 4
    assert gin.query_parameter("PSEUDO_QUERIES/macro.value") == \
        "workdir/qg_scifact/pseudo_queries.jsonl"


def test_small_dsi_qg_config_trains_on_pseudo_queries(tmp_path):
    data = write_collection(tmp_path / "tiny")
    pseudo = tmp_path / "pseudo_queries.jsonl"
    pseudo.write_text("".join(json.dumps({"doc_id": d, "queries": [f"about {d}", f"what {d}"]})
                              + "\n" for d in DOCS))
    workdir = tmp_path / "work"
    gin_config.parse(["gin/train/dsi_qg_small_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", f"PSEUDO_QUERIES='{pseudo}'",
        "TrainerConfig.num_steps = 2", *DSI_TINY, "train_dsi.t5_overrides = {'dtype': 'bfloat16'}"])
    gin_config.run_job()
    summary = json.loads((workdir / "training_summary.json").read_text())
    assert summary["t5"]["dtype"] == "bfloat16"
    assert summary["data"]["chunks_per_doc"] == 4
    assert f"pseudo_query: {2 * len(DOCS)} per epoch from {2 * len(DOCS)} examples" \
        in summary["mixture"], summary["mixture"]
    assert json.loads((workdir / "metrics.json").read_text())["num_queries"] == len(TEST)


WARM_TINY = ["DSIData.global_batch_size = 4", "DSIData.inputs_max_length = 24",
             "DSIData.spans_per_doc = 2", "DSIData.span_length = 4",
             "TrainerConfig.checkpoint_every = 100", "TrainerConfig.log_every = 50",
             "train_dsi.beam_size = 4", "train_dsi.eval_batch_size = 2",
             "OptimizerConfig.warmup_fraction = 0.0"]


def test_warm_started_dsi_starts_as_the_fine_tuned_dual_encoder(tmp_path, monkeypatch):
    """dsi_scifact.gin on the tiny collection: a dual encoder trained by train_dual_encoder seeds
    the encoder and the docid rows; before training DSI ranks exactly as that dual encoder does
    (evaluated in the same job), and training on spans + labelled queries runs from there."""
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = write_collection(tmp_path / "tiny")
    dual = tmp_path / "dual"
    gin_config.parse(["gin/train/minilm_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{dual}'", "TrainerConfig.num_steps = 2",
        "DataConfig.global_batch_size = 2", "DataConfig.doc_max_length = 32",
        "DataConfig.query_max_length = 16", "train_dual_encoder.evaluate_zero_shot = False"])
    gin_config.run_job()
    gin.clear_config()
    workdir = tmp_path / "dsi"
    gin_config.parse(["gin/train/dsi_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", f"DUAL_ENCODER='{dual}'",
        "TrainerConfig.num_steps = 3", *WARM_TINY])
    gin_config.run_job()
    init, dense = run_order(workdir / "init" / "run.trec"), run_order(workdir / "dense" / "run.trec")
    assert set(init) == {"q5", "q6"}
    assert all(init[q] == dense[q][:4] for q in init)  # the untrained DSI is the dual encoder
    summary = json.loads((workdir / "training_summary.json").read_text())
    assert summary["steps"] == 3 and summary["resumed_from"] == "imported"
    assert summary["warm_start"]["encoder"] == "dual_encoder"
    assert summary["dual_encoder"]["step"] == 2
    assert summary["corpus_queries"]["spans"]["queries"] == 12
    assert "spans: " in summary["mixture"]
    assert set(summary["throughput_queries_per_s"]) == {
        "dsi-minilm-atomic (step 0)", "all-MiniLM-L6-v2-finetuned+exact", "dsi-minilm-atomic"}
    table = (workdir / "comparison.md").read_text()
    assert "dsi-minilm-atomic (step 0)" in table and "all-MiniLM-L6-v2-finetuned" in table


def test_warm_start_from_minilm_without_rows_semantic_docids_and_a_streamed_corpus(
        tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "dsi"
    gin_config.parse(["gin/train/dsi_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", "DUAL_ENCODER=None", "DOCIDS='semantic'",
        "train_dsi.scheme_options = {'num_clusters': 2, 'balanced': True}",
        "WarmStart.encoder = 'minilm'", "WarmStart.output_rows = False",
        "train_dsi.dense_baseline = False", "train_dsi.evaluate_init = False",
        "DSIData.sentence_weight = 1.0", "TrainerConfig.num_steps = 2",
        "train_dsi.max_documents = 6", *WARM_TINY])   # the corpus read streamed, as a prefix
    gin_config.run_job()
    docids = json.loads((workdir / "docids.json").read_text())
    assert docids["scheme"] == "semantic" and docids["config"]["balanced"]
    summary = json.loads((workdir / "training_summary.json").read_text())
    assert summary["warm_start"]["output_rows"] is False and summary["dual_encoder"] is None
    assert set(summary["corpus_queries"]) == {"spans", "sentences"}
    assert json.loads((workdir / "metrics.json").read_text())["model"] == "dsi-minilm-semantic"

    gin.clear_config()
    gin_config.parse(["gin/train/dsi_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{tmp_path / 'other'}'", "DUAL_ENCODER=None",
        "TrainerConfig.num_steps = 2", *WARM_TINY])
    with pytest.raises(ConfigError, match="needs train_dsi.dual_encoder"):
        gin_config.run_job()
