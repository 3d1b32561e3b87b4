"""The SPLADE training job end to end through its gin configs, on the six-document collection with
a tiny random BertForMaskedLM checkpoint (both query sides; Seismic for one of them)."""
import json
import re

import numpy as np
import pytest
from safetensors.numpy import save_file

from irjax import gin_config
from irjax.models.bert import BertConfig
from tests.helpers.tiny_collection import DOCS, TEST, TRAIN, write_collection
from tests.models.test_splade import _mlm_state

pytestmark = pytest.mark.usefixtures("clean_gin")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_checkpoint(root):
    """config.json, model.safetensors (encoder + MLM head) and a vocab.txt of the collection's words."""
    texts = list(DOCS.values()) + [t for t, _ in {**TRAIN, **TEST}.values()]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = SPECIALS + words
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    root.mkdir(parents=True)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (root / "config.json").write_text(json.dumps({
        "vocab_size": config.vocab_size, "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64,
        "hidden_act": "gelu", "architectures": ["BertForMaskedLM"]}))
    state = {k: np.ascontiguousarray(v * 0.1 if v.dtype == np.float32 else v)
             for k, v in _mlm_state(config).items()}
    save_file(state, str(root / "model.safetensors"))
    return root


@pytest.mark.parametrize("config,overrides", [
    ("gin/train/splade_scifact.gin", ["train_splade.index = 'seismic'"]),
    ("gin/train/splade_inference_free_scifact.gin", ["train_splade.evaluate_zero_shot = True"]),
])
def test_splade_configs_train_and_write_metrics(tmp_path, monkeypatch, config, overrides):
    monkeypatch.setenv("IRJAX_CACHE_DIR", str(tmp_path / "cache"))
    weights = write_checkpoint(tmp_path / "weights" / "splade-tiny")
    monkeypatch.setenv("IRJAX_WEIGHTS_DIR", str(tmp_path / "weights"))
    data = write_collection(tmp_path / "tiny")
    workdir = tmp_path / "work"
    gin_config.parse([config], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", "TrainerConfig.num_steps = 3",
        "DataConfig.global_batch_size = 2", "DataConfig.doc_max_length = 16",
        "DataConfig.query_max_length = 8", "train_splade.lambda_warmup_steps = 2",
        "train_splade.eval_doc_max_length = 16", "TrainerConfig.checkpoint_every = 3",
        "TrainerConfig.log_every = 1", *overrides])
    gin_config.run_job()
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"nDCG@10", "R@10", "R@100", "RR@10"}
    assert metrics["bytes_per_doc"] > 0 and metrics["postings_per_doc"] > 0
    assert metrics["model"] == f"{weights.name}-{metrics['query_side']}-finetuned"
    log = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3]
    # the quadratic warm-up of lambda over 2 steps: batches 0, 1, 2 -> 0, 1/4, 1 of the peak
    peak = steps[-1]["lambda_d"]
    assert [row["lambda_d"] / peak for row in steps] == pytest.approx([0.0, 0.25, 1.0])
    assert list((tmp_path / "cache" / "splade_corpus").glob("*.npz"))  # corpus vectors kept
    if metrics["query_side"] == "idf":
        assert metrics["postings_per_query"] <= 8  # distinct query tokens, no expansion
        assert (workdir / "zero_shot" / "metrics.json").exists()
