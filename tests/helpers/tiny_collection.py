"""The six-document BEIR-layout collection the job, retrieval and data tests train and rank on.

Four train queries and two test queries, each with one relevant document whose content words it
shares, so even a few training steps (or BM25) can rank the right document first.
"""
from __future__ import annotations

import json
from pathlib import Path

DOCS = {
    "d1": "The jaguar is a large cat native to the Americas.",
    "d2": "Python is a programming language with dynamic typing.",
    "d3": "Coffee is brewed from roasted coffee beans.",
    "d4": "Glaciers are slow rivers of ice that carve valleys.",
    "d5": "Violins are string instruments played with a bow.",
    "d6": "Photosynthesis turns light, water and carbon dioxide into sugar.",
}
TRAIN = {"q1": ("which big cat lives in america", "d1"), "q2": ("language for programs", "d2"),
         "q3": ("how is coffee made", "d3"), "q4": ("what carves valleys", "d4")}
TEST = {"q5": ("instrument with a bow", "d5"), "q6": ("how plants make sugar", "d6")}

# gin bindings that shrink gin/train/dsi_mini_scifact.gin to this collection: a tiny T5 without
# dropout, batches of 4, beam 4 (of 6 documents), no dense baseline, a high constant learning rate.
DSI_TINY = ["train_dsi.t5_preset = 'tiny'", "train_dsi.t5_overrides = {'dropout_rate': 0.0}",
            "DSIData.global_batch_size = 4", "DSIData.inputs_max_length = 24",
            "TrainerConfig.checkpoint_every = 100", "TrainerConfig.log_every = 50",
            "train_dsi.beam_size = 4", "train_dsi.eval_batch_size = 2", "train_dsi.dense_baseline = False",
            "train_dsi.reference_metrics = []", "OptimizerConfig.learning_rate = 1e-2",
            "OptimizerConfig.warmup_fraction = 0.0"]


def write_collection(root: Path) -> Path:
    """Writes corpus.jsonl, queries.jsonl and qrels/{train,test}.tsv under `root`; returns it."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(
        json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in {**TRAIN, **TEST}.items()))
    for split, queries in (("train", TRAIN), ("test", TEST)):
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, (_, d) in queries.items()))
    return root
