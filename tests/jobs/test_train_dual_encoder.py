"""The dual-encoder training job end to end through gin, on a tiny collection with MiniLM."""
import json

import gin
import numpy as np
import pytest

from irjax import gin_config
from irjax.data.runs import read_trec_run
from tests.helpers.runs import run_order
from tests.helpers.tiny_collection import write_collection

pytestmark = pytest.mark.usefixtures("clean_gin")


def test_minilm_training_config_runs_and_writes_the_contract_files(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    gin_config.parse(["gin/train/minilm_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", "TrainerConfig.num_epochs = 2",
        "DataConfig.global_batch_size = 2", "DataConfig.doc_max_length = 32",
        "DataConfig.query_max_length = 16", "TrainerConfig.checkpoint_every = 2",
        "TrainerConfig.log_every = 1", "TrainerConfig.eval_every = 2",
    ])
    gin_config.run_job()
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"nDCG@10", "R@10", "R@100", "RR@10"}
    assert (metrics["dataset"], metrics["split"]) == ("tiny", "test")
    assert metrics["model"].startswith("all-MiniLM-L6-v2-finetuned")
    zero_shot = json.loads((workdir / "zero_shot" / "metrics.json").read_text())
    assert zero_shot["model"].startswith("all-MiniLM-L6-v2")
    log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [row["step"] for row in log if "loss" in row]
    assert train_steps == [1, 2, 3, 4]  # 4 pairs / batch 2 = 2 steps per epoch, 2 epochs
    evals = [row for row in log if "eval/nDCG@10" in row]
    assert [row["step"] for row in evals] == [2, 4]  # periodic evaluation on the eval split
    assert json.loads((workdir / "eval" / "step_4" / "metrics.json").read_text())["metrics"] == \
        metrics["metrics"]  # the step-4 eval saw the final params
    summary = json.loads((workdir / "training_summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumed_from"] == "imported"
    assert any((workdir / "tensorboard").iterdir())
    assert "TrainerConfig.num_epochs = 2" in (workdir / "operative_config.gin").read_text()

    # Running the same config again resumes from the finished checkpoint instead of retraining.
    gin.clear_config()
    gin_config.parse(["gin/train/minilm_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", "TrainerConfig.num_epochs = 2",
        "DataConfig.global_batch_size = 2", "DataConfig.doc_max_length = 32",
        "DataConfig.query_max_length = 16",
    ])
    gin_config.run_job()
    assert json.loads((workdir / "training_summary.json").read_text())["resumed_from"] == "workdir"

    # Another workdir starting from this run's weights (README's resume order): TrainerConfig's
    # init_checkpoint, step 0, and with a zero learning rate the same retrieval as the source.
    gin.clear_config()
    second = tmp_path / "second"
    gin_config.parse(["gin/train/minilm_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{second}'", "TrainerConfig.num_steps = 1",
        "DataConfig.global_batch_size = 2", "DataConfig.doc_max_length = 32",
        "DataConfig.query_max_length = 16", "OptimizerConfig.learning_rate = 0.0",
        f"TrainerConfig.init_checkpoint = '{workdir / 'checkpoints'}'",
        "train_dual_encoder.evaluate_zero_shot = False",
    ])
    gin_config.run_job()
    started = json.loads((second / "training_summary.json").read_text())
    assert (started["resumed_from"], started["steps"]) == ("init_checkpoint", 1)
    assert started["trainer"]["init_checkpoint"] == str(workdir / "checkpoints")
    assert json.loads((second / "metrics.json").read_text())["metrics"] == metrics["metrics"]

    # The trained run as a reranking first stage (gin/eval/dense_cross_encoder_rerank.gin with
    # the identity reranker): its newest checkpoint retrieves exactly what the job evaluated.
    gin.clear_config()
    rerank = tmp_path / "rerank"
    gin_config.parse(["gin/eval/dense_cross_encoder_rerank.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{rerank}'", f"DUAL_ENCODER='{workdir}'",
        "RerankingRetriever.reranker = @IdentityReranker()",
    ])
    gin_config.run_job()
    reranked = json.loads((rerank / "metrics.json").read_text())
    assert reranked["model"] == "all-MiniLM-L6-v2-finetuned+exact>>identity@100"
    assert reranked["metrics"] == metrics["metrics"]
    assert run_order(rerank / "run.trec") == run_order(workdir / "run.trec")
    scores, trained = read_trec_run(rerank / "run.trec"), read_trec_run(workdir / "run.trec")
    zero_shot_scores = read_trec_run(workdir / "zero_shot" / "run.trec")
    flat = [(q, d) for q in sorted(scores) for d in sorted(scores[q])]
    assert np.allclose([scores[q][d] for q, d in flat], [trained[q][d] for q, d in flat],
                       atol=1e-4)
    assert not np.allclose([scores[q][d] for q, d in flat],
                           [zero_shot_scores[q][d] for q, d in flat], atol=1e-4)

