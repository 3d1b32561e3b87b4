"""The XTR training job end to end through gin on a tiny collection, and the agreement of the
two MaxSimRetriever modes when k' covers every corpus token."""
import json

import jax
import pytest

from irjax import gin_config
from irjax.data.collection import load_collection
from irjax.data.tokenization import WordPieceTokenizer
from irjax.retrieval.multi_vector import MaxSimRetriever
from irjax.models.bert import BertConfig
from irjax.models.multi_vector import MultiVectorModel
from irjax.models.pretrained import load_checkpoint
from tests.helpers.tiny_collection import DOCS, TEST, TRAIN, write_collection

SHORT = ["DataConfig.global_batch_size = 2", "DataConfig.doc_max_length = 32",
         "DataConfig.query_max_length = 16", "DataConfig.num_hard_negatives = 0",
         "TrainerConfig.num_steps = 2", "TrainerConfig.checkpoint_every = 2",
         "TrainerConfig.log_every = 1", "train_multi_vector.evaluate_dense_baseline = False"]


pytestmark = pytest.mark.usefixtures("clean_gin")


def test_xtr_training_config_runs_and_writes_the_contract_files(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    gin_config.parse(["gin/train/xtr_scifact.gin"],
                     [f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", *SHORT])
    gin_config.run_job()
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"nDCG@10", "R@10", "R@100", "RR@10"}
    assert (metrics["dataset"], metrics["split"]) == ("tiny", "test")
    assert metrics["num_queries"] == len(TEST)
    assert metrics["model"].endswith("-xtr+xtr")
    assert {"encode_corpus_s", "score_s"} <= set(metrics["timings"])
    summary = json.loads((workdir / "training_summary.json").read_text())
    assert summary["steps"] == 2 and summary["resumed_from"] == "imported"
    assert (workdir / "comparison.md").exists()


def test_xtr_mode_with_every_token_retrieved_ranks_like_exhaustive_maxsim(tmp_path):
    collection = load_collection(write_collection(tmp_path / "tiny"), "test")
    checkpoint = load_checkpoint()
    config = BertConfig.from_json(checkpoint.config_path)
    tokenizer = WordPieceTokenizer(checkpoint.directory)
    model = MultiVectorModel(config, dim=16)
    ids = tokenizer.encode(["a b"], 8)
    params = model.init_variables(jax.random.PRNGKey(0), {"pos_ids": ids.ids, "pos_mask": ids.mask})
    queries = {q: text for q, (text, _) in {**TRAIN, **TEST}.items()}
    runs = {}
    for mode in ("maxsim", "xtr"):
        # doc_chunk 4 splits the 6 documents into two chunks, exercising the running top-k.
        retriever = MaxSimRetriever(model, params, tokenizer, doc_max_length=32, query_max_length=16,
                                    batch_size=4, mode=mode, k_prime=10_000, doc_chunk=4,
                                    token_chunk=16)
        runs[mode] = retriever.retrieve(collection, queries, k=len(DOCS))
        assert {"encode_corpus_s", "score_s"} <= set(retriever.timings)
    for query in queries:
        maxsim, xtr = runs["maxsim"][query], runs["xtr"][query]
        assert list(maxsim) == list(xtr) and len(maxsim) == len(DOCS)
        assert [maxsim[d] for d in maxsim] == pytest.approx([xtr[d] for d in xtr], abs=1e-5)


def test_colberter_config_trains_gated_word_vectors_and_reports_index_size(tmp_path, monkeypatch):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    gin_config.parse(["gin/train/colberter_scifact.gin"],
                     [f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", *SHORT])
    gin_config.run_job()
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["model"].endswith("-colbert-words-gated+maxsim")
    per_doc = metrics["vectors_per_doc"]
    assert per_doc["tokens"] > per_doc["words"] >= per_doc["kept"] > 0
    assert metrics["bytes_per_doc"] == pytest.approx(per_doc["kept"] * 128 * 4)
    assert metrics["token_bytes_per_doc"] == pytest.approx(per_doc["tokens"] * 128 * 4)
    for fraction in (0.25, 0.5):   # the config's gate_drop_fractions, on the same encoding
        pruned = json.loads((workdir / f"gate_drop_{fraction:g}" / "metrics.json").read_text())
        assert pruned["vectors_per_doc"]["words"] == per_doc["words"]
        assert pruned["vectors_per_doc"]["kept"] == pytest.approx(
            per_doc["kept"] * (1 - fraction), abs=1.0)
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if "gate_penalty" in line]
    assert train and all(line["loss"] >= line["contrastive_loss"] for line in train)
    summary = json.loads((workdir / "training_summary.json").read_text())
    assert summary["model"]["pooling"] == "word" and summary["model"]["gate"] is True
