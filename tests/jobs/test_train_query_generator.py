"""The query-generation job through gin on a tiny collection: a tiny T5 memorises its training
queries (greedy decoding gives them back, so training and sampling are wired together), the
outputs are valid DSI pseudo-query input, and a rerun resumes instead of retraining."""
import json

import gin
import pytest

from irjax import gin_config
from irjax.data.query_generation_examples import heldout_queries
from irjax.jobs.train_dsi import read_pseudo_queries
from tests.helpers.tiny_collection import DOCS, DSI_TINY, TRAIN, write_collection

TINY = [*(f"train_query_generator.{binding}" for binding in (
            "t5_preset = 'tiny'", "t5_overrides = {'dropout_rate': 0.0}", "global_batch_size = 3",
            "inputs_max_length = 24", "targets_max_length = 12")),
        "OptimizerConfig.learning_rate = 1e-2", "OptimizerConfig.warmup_fraction = 0.0",
        "TrainerConfig.checkpoint_every = 100", "TrainerConfig.log_every = 100",
        "TrainerConfig.eval_every = 100", "QuerySampling.batch_size = 4",
        "QuerySampling.num_queries_per_doc = 2"]


pytestmark = pytest.mark.usefixtures("clean_gin")


def _run_config(config, bindings):
    gin.clear_config()
    gin_config.parse([config], bindings)
    return gin_config.run_job()


def _run(bindings):
    return _run_config("gin/train/qg_scifact.gin", bindings)


def test_trains_memorises_and_writes_pseudo_queries(tmp_path):
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    base = [f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", "TrainerConfig.num_steps = 200",
            *TINY]
    summary = _run(base + ["QuerySampling.top_k = 1"])

    heldout = heldout_queries(sorted(TRAIN), 0.05, seed=0)      # 1 of the 4 train queries
    assert len(heldout) == 1 and summary["heldout_loss"]["pairs"] == 1
    assert summary["examples"]["train_pairs"] == 3 and summary["steps"] == 200
    lines = (workdir / "pseudo_queries.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["doc_id"] for r in rows] == list(DOCS)             # every document, corpus order
    assert all(len(r["queries"]) == 2 and all(q.strip() for q in r["queries"]) for r in rows)
    generated = read_pseudo_queries(workdir / "pseudo_queries.jsonl")   # DSI's reader accepts it
    for qid, (query, doc_id) in TRAIN.items():
        if qid not in heldout:                                   # memorised, greedy gives it back
            assert generated[doc_id] == [query, query], (doc_id, generated[doc_id])
    assert summary["quality_generated"]["overlap_fraction"] > 0
    assert summary["train_pairs_loss"]["token_accuracy"] == 1.0
    assert (workdir / "samples.md").read_text().count("- generated:") >= 2
    log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    key = "eval/heldout_cross_entropy"
    curve = {r["step"]: r[key] for r in log if key in r}
    assert sorted(curve) == [100, 200]                           # eval_every=100
    assert curve[200] == pytest.approx(summary["heldout_loss"]["cross_entropy"], rel=1e-5)
    written = json.loads((workdir / "training_summary.json").read_text())
    assert written["generation"]["documents"] == len(DOCS)

    # A rerun restores the finished checkpoint (no training) and samples with top-k 10.
    again = _run(base + ["QuerySampling.top_k = 10"])
    assert again["resumed_from"] == "workdir" and again["heldout_loss"] == summary["heldout_loss"]
    sampled = read_pseudo_queries(workdir / "pseudo_queries.jsonl")
    assert list(sampled) == list(DOCS) and all(len(q) == 2 for q in sampled.values())

    # DSI-QG: the DSI config reads them as pseudo-query examples (one step is enough to show it).
    dsi = tmp_path / "dsi"
    _run_config("gin/train/dsi_qg_scifact.gin", [
        f"DATA_DIR='{data}'", f"WORKDIR='{dsi}'",
        f"PSEUDO_QUERIES='{workdir}/pseudo_queries.jsonl'",
        "TrainerConfig.num_steps = 1", *DSI_TINY])
    mixture = json.loads((dsi / "training_summary.json").read_text())["mixture"]
    assert f"pseudo_query: {3 * 4} per epoch from {2 * len(DOCS)} examples" in mixture, mixture


def test_dsi_qg_config_defaults_to_the_qg_workdir():
    gin_config.parse(["gin/train/dsi_qg_scifact.gin"], ["WORKDIR='w'"])
    assert str(gin.query_parameter("DSIData.pseudo_queries")) == "%PSEUDO_QUERIES"
    assert gin.query_parameter("PSEUDO_QUERIES/macro.value") == \
        "workdir/qg_scifact/pseudo_queries.jsonl"
    assert gin.query_parameter("train_dsi.docid_scheme") is not None   # dsi_mini_scifact.gin included
