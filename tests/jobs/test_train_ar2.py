"""The AR2 job end to end through gin/train/ar2_scifact.gin on the tiny collection: it trains,
re-mines the negatives with its own retriever every `reindex_every` steps, and writes the
evaluation contract files and the trained ranker."""
import json

import pytest

from irjax import gin_config
from irjax.models.cross_encoder import CrossEncoderScorer
from tests.helpers.tiny_collection import write_collection

pytestmark = pytest.mark.usefixtures("clean_gin")


def test_tiny_ar2_run_reindexes_at_the_interval(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    gin_config.parse(["gin/train/ar2_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", "TrainerConfig.num_steps = 3",
        "REINDEX_EVERY = 2", "DataConfig.global_batch_size = 2",
        "DataConfig.doc_max_length = 32", "DataConfig.query_max_length = 16",
        "train_ar2.pair_max_length = 48", "train_ar2.negative_depth = 5",
        "train_ar2.negative_skip = 0", "train_ar2.eval_max_length = 32",
        "TrainerConfig.checkpoint_every = 10", "TrainerConfig.log_every = 1",
        "EncoderEfficiency.grad_cache_tokens = None",  # tiny batches; tests/models/test_ar2.py
    ])
    gin_config.run_job()
    rounds = json.loads((workdir / "ar2" / "rounds.json").read_text())
    assert [(r["start_step"], r["end_step"]) for r in rounds] == [(0, 2), (2, 3)]
    assert all(r["negatives"].startswith("mined by the retriever") for r in rounds)
    for start in (0, 2):  # one negatives file per round, judged documents never negatives
        lines = (workdir / "ar2" / f"negatives_step{start:07d}.jsonl").read_text().splitlines()
        for row in map(json.loads, lines):
            assert len(row["negatives"]) == 4 and row["qid"] not in ("q5", "q6")
    log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3]
    assert {"kl", "ranker_loss", "contrastive_loss", "ranker_accuracy"} <= set(steps[-1])
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["split"]) == ("tiny", "test")
    assert metrics["model"].startswith("all-MiniLM-L6-v2-ar2")
    ranker = CrossEncoderScorer.load(workdir / "ranker")
    assert ranker.score_pairs(["instrument with a bow"], ["Violins are string instruments."]).shape == (1,)
    summary = json.loads((workdir / "training_summary.json").read_text())
    assert summary["steps"] == 3 and len(summary["rounds"]) == 2
