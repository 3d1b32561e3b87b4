"""The cross-encoder job end to end through its gin config, on the tiny collection with MiniLM:
the loss falls, the run and cost files are written, the saved model ranks each training query's
relevant document first among all documents, and the teacher job scores with it."""
import json

import gin
import numpy as np
import pytest

from irjax import gin_config
from irjax.data.cross_encoder_batches import CrossEncoderBatches
from irjax.data.runs import read_trec_run
from irjax.data.teacher_scores import read_teacher_scores
from irjax.data.tokenization import WordPieceTokenizer
from irjax.data.training_examples import TrainingPair
from irjax.models.cross_encoder import CrossEncoderScorer
from irjax.models.pretrained import load_checkpoint
from irjax.retrieval.rerank import PairwiseReranker
from tests.helpers.tiny_collection import DOCS, TEST, TRAIN, write_collection

pytestmark = pytest.mark.usefixtures("clean_gin")


def test_groups_put_the_positive_first_and_join_query_and_document():
    tokenizer = WordPieceTokenizer(load_checkpoint().directory)
    pairs = [TrainingPair(q, text, d, DOCS[d]) for q, (text, d) in TRAIN.items()]
    negatives = {q: [d for d in DOCS if d != pos] for q, (_, pos) in TRAIN.items()}
    batches = CrossEncoderBatches(pairs, tokenizer, 2, max_length=24, query_max_length=8,
                                  num_hard_negatives=2, hard_negatives=negatives, documents=DOCS)
    batch = batches.materialize(batches.global_rows(0))
    assert batch["pair_ids"].shape == batch["pair_types"].shape == (2, 3, 24)
    for row, q in enumerate(batch["query_index"].tolist()):
        qid = batches.query_ids[q]
        expected = tokenizer.tokenize_pairs([TRAIN[qid][0]], [DOCS[TRAIN[qid][1]]], 24, 8)[0]
        length = int(batch["pair_mask"][row, 0].sum())
        assert batch["pair_ids"][row, 0, :length].tolist() == expected[0].tolist()
        assert batch["pair_types"][row, 0, :length].tolist() == expected[1].tolist()
    assert batches.fingerprint != CrossEncoderBatches(
        pairs, tokenizer, 2, max_length=32, query_max_length=8, num_hard_negatives=2,
        hard_negatives=negatives, documents=DOCS).fingerprint
    with pytest.raises(ValueError, match="num_hard_negatives >= 1"):
        CrossEncoderBatches(pairs, tokenizer, 2, num_hard_negatives=0)


def test_training_lowers_the_loss_and_the_reranker_ranks_the_relevant_document_first(
        tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    gin_config.parse(["gin/train/cross_encoder_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", "EVAL_QUERIES = None",
        "train_cross_encoder.max_length = 32", "DataConfig.global_batch_size = 2",
        "DataConfig.query_max_length = 12", "DataConfig.num_hard_negatives = 3",
        "DataConfig.hard_negative_skip = 0", "TrainerConfig.num_epochs = 6",
        "TrainerConfig.log_every = 1", "OptimizerConfig.learning_rate = 3e-4",
        "OptimizerConfig.warmup_fraction = 0.0", "OptimizerConfig.weight_decay = 0.0",
    ])
    gin_config.run_job()
    log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert len(losses) == 12  # 4 pairs / batch 2 = 2 steps per epoch, 6 epochs
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4])

    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["model"] == "bm25>>all-MiniLM-L6-v2-cross-encoder@100"
    assert metrics["num_queries"] == len(TEST)
    assert metrics["metrics"]["RR@10"] == 1.0  # the relevant document first for every query
    timings = metrics["timings"]
    bm25_run = read_trec_run(workdir / "bm25" / "run.trec")
    candidates = sum(map(len, bm25_run.values())) / len(TEST)  # BM25 returns matching documents
    assert timings["rerank_model_calls_per_query"] == candidates
    assert timings["rerank_flops_per_query"] > 0 and timings["rerank_ms_per_query"] > 0
    bm25 = json.loads((workdir / "bm25" / "metrics.json").read_text())
    assert bm25["model"] == "bm25" and bm25["num_queries"] == len(TEST)
    assert "bm25>>" in (workdir / "comparison.md").read_text()

    # BM25 finds only one candidate per tiny test query, so rerank the whole corpus with the
    # saved model: each training query's relevant document comes first among all six.
    scorer = CrossEncoderScorer.load(workdir / "cross_encoder")
    reranked = PairwiseReranker(scorer).rerank(
        {q: text for q, (text, _) in TRAIN.items()}, {q: dict.fromkeys(DOCS, 0.0) for q in TRAIN},
        DOCS)
    assert {q: max(scores, key=scores.get) for q, scores in reranked.items()} == \
        {q: doc for q, (_, doc) in TRAIN.items()}

    # The trained model as a margin-MSE teacher: every judged train pair and BM25 candidate
    # scored, x scale, in a file the dual-encoder pipeline reads.
    gin.clear_config()
    teacher_dir = tmp_path / "teacher"
    gin_config.parse(["gin/train/ce_teacher_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{teacher_dir}'",
        f"CE_MODEL='{workdir / 'cross_encoder'}'"])
    gin_config.run_job()
    teacher = read_teacher_scores(teacher_dir / "teacher_scores.tsv")
    assert set(teacher) == set(TRAIN)
    for qid, (query, pos) in TRAIN.items():
        docs = sorted(set(teacher[qid]))
        assert pos in docs
        expected = scorer.score_pairs([query] * len(docs), [DOCS[d] for d in docs]) * 0.05
        np.testing.assert_allclose([teacher[qid][d] for d in docs], expected, atol=1e-5)
    assert json.loads((teacher_dir / "metrics.json").read_text())["split"] == "train"
