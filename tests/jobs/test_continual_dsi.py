"""Continual DSI indexing end to end through gin on the tiny collection: phase 1 memorizes the old
documents, plain phase 2 learns the new ones, the report's forgetting is phase 1 minus phase 2
as recomputed from the per-phase files; plus the split and the checks that run before training."""
import json
import sys

import gin
import pytest

from irjax import gin_config
from irjax.data.collection import load_collection
from irjax.data.continual_split import judgments_within, queries_answered_by, split_documents
from irjax.data.docids import AtomicDocids, DocidError
from irjax.errors import ConfigError, InputFileError, MissingFileError
from irjax.evaluation.memorization import hits_at
from irjax.jobs.continual_dsi import continual_dsi, replay_memory
from irjax.jobs.continual_report import markdown_table, write_plot
from tests.helpers.tiny_collection import DOCS, TRAIN, write_collection

PSEUDO = {  # hand-written "generated" queries, for every document; only D0's may be replayed
    "d1": ["big cat of the americas", "jaguar habitat"],
    "d2": ["dynamic typing language", "what is python"],
    "d3": ["roasted beans drink", "brewing coffee"],
    "d4": ["ice rivers", "how valleys form"],
    "d5": ["bowed string instrument", "what is a violin"],
    "d6": ["how do plants use light", "sugar from carbon dioxide"],
}
TINY = ["continual_dsi.t5_preset = 'tiny'", "continual_dsi.t5_overrides = {'dropout_rate': 0.0}",
        "DSIData.global_batch_size = 4", "DSIData.inputs_max_length = 24",
        "continual_dsi.new_doc_count = 2", "phase1/TrainerConfig.num_steps = 150",
        "phase2/TrainerConfig.num_steps = 80", "phase1/OptimizerConfig.learning_rate = 1e-2",
        "phase2/OptimizerConfig.learning_rate = 1e-2",
        "OptimizerConfig.warmup_fraction = 0.0",
        "continual_dsi.beam_size = 6", "continual_dsi.eval_batch_size = 4",
        "continual_dsi.memorization_sample = None", "TrainerConfig.checkpoint_every = 1000",
        "TrainerConfig.log_every = 50"]


pytestmark = pytest.mark.usefixtures("clean_gin")


def write_pseudo_queries(path):
    path.write_text("".join(json.dumps({"doc_id": d, "queries": q}) + "\n"
                            for d, q in PSEUDO.items()))
    return path


def test_continual_config_memorizes_learns_and_reports_forgetting(tmp_path):
    data = write_collection(tmp_path / "tiny")
    pseudo = write_pseudo_queries(tmp_path / "pseudo.jsonl")
    workdir = tmp_path / "work"
    # Evaluate on the *train* split: D0-only queries are queries the model was trained on.
    gin_config.parse(["gin/train/dsi_continual_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", f"PSEUDO_QUERIES='{pseudo}'",
        "SPLIT='train'", *TINY])
    gin_config.run_job()

    split = json.loads((workdir / "split.json").read_text())
    old, new = split["old"], split["new"]
    assert len(new) == 2 and sorted(old + new) == sorted(DOCS) and not set(old) & set(new)

    report = json.loads((workdir / "continual.json").read_text())
    rows = {row["phase"]: row for row in report["rows"]}
    assert list(rows) == ["phase1", "phase2_plain", "phase2_replay"]
    first, plain, replay = rows["phase1"], rows["phase2_plain"], rows["phase2_replay"]
    assert first["steps"] == 150 and plain["steps"] == replay["steps"] == 80
    assert plain["resumed_from"] == replay["resumed_from"] == "init_checkpoint"
    assert first["d0_hits@1"] >= 0.75                   # phase 1 memorized the old documents
    assert first["d1_hits@1"] < plain["d1_hits@1"]      # ... not the new ones, which phase 2 learns
    assert plain["d1_hits@1"] == 1.0
    answered_by_old = [q for q, (_, d) in TRAIN.items() if d in old]
    assert first["d0_queries"] == len(answered_by_old)

    # Forgetting, recomputed from the per-phase probe files.
    def d0_hits1(phase):
        probes = json.loads((workdir / phase / "eval" / "memorization.json").read_text())
        ranks = probes["d0"]["ranks"]
        assert sorted(ranks) == sorted(old)
        return hits_at(list(ranks.values()), 1)

    assert d0_hits1("phase1") == pytest.approx(first["d0_hits@1"])
    for phase, row in (("phase2_plain", plain), ("phase2_replay", replay)):
        assert row["forgetting_hits@1"] == pytest.approx(d0_hits1("phase1") - d0_hits1(phase))
    assert first["forgetting_hits@1"] is None

    # Replay used exactly the old documents' pseudo-queries; the plain variant none.
    replay_phase = json.loads((workdir / "phase2_replay" / "phase.json").read_text())
    assert replay_phase["kind_sizes"]["pseudo_query"] == sum(len(PSEUDO[d]) for d in old)
    assert replay_phase["kind_sizes"]["indexing"] == len(new)
    assert "pseudo_query" not in json.loads((workdir / "phase2_plain" / "phase.json").read_text())[
        "kind_sizes"]
    assert replay["forgetting_hits@1"] < plain["forgetting_hits@1"]  # replay mitigates it
    table = (workdir / "continual.md").read_text()
    assert "forgetting" in table and all(f"| {phase} " in table for phase in rows)

    # Rerun on the finished WORKDIR: every phase restores its own checkpoint, nothing retrains,
    # and the numbers are the same.
    gin.clear_config()
    gin_config.parse(["gin/train/dsi_continual_scifact.gin"], [
        f"DATA_DIR='{data}'", f"WORKDIR='{workdir}'", f"PSEUDO_QUERIES='{pseudo}'",
        "SPLIT='train'", *TINY])
    gin_config.run_job()
    again = json.loads((workdir / "continual.json").read_text())["rows"]
    assert [row["resumed_from"] for row in again] == ["workdir"] * 3
    strip = lambda row: {k: v for k, v in row.items() if k != "resumed_from"}  # noqa: E731
    assert [strip(row) for row in again] == [strip(row) for row in report["rows"]]


def test_split_is_seeded_and_restricts_judgments(tmp_path):
    collection = load_collection(write_collection(tmp_path / "tiny"), "train")
    split = split_documents(collection.doc_ids, new_fraction=0.34, seed=3)
    assert split == split_documents(collection.doc_ids, new_doc_count=2, seed=3)
    assert len(split.new) == 2 and sorted(split.old + split.new) == sorted(DOCS)
    assert [d for d in collection.doc_ids if d in split.old] == list(split.old)  # corpus order
    with pytest.raises(ValueError, match="at least one document"):
        split_documents(collection.doc_ids, new_doc_count=6)
    old = set(split.old)
    judged = judgments_within(collection, old)
    assert all(set(docs) <= old for docs in judged.qrels.values())
    answered = queries_answered_by(collection, old)
    assert set(answered.qrels) == {q for q, (_, d) in TRAIN.items() if d in old}
    assert len(collection.qrels) == len(TRAIN)  # the original is untouched


def test_replay_inputs_are_checked_before_training(tmp_path):
    scheme = AtomicDocids.build(list(DOCS))
    path = write_pseudo_queries(tmp_path / "pseudo.jsonl")
    memory = replay_memory(str(path), scheme, ["d1", "d3"])
    assert memory == {"d1": PSEUDO["d1"], "d3": PSEUDO["d3"]}
    (tmp_path / "other.jsonl").write_text(json.dumps({"doc_id": "x9", "queries": ["q"]}) + "\n")
    with pytest.raises(DocidError, match="x9"):
        replay_memory(str(tmp_path / "other.jsonl"), scheme, ["d1"])
    with pytest.raises(InputFileError, match="no pseudo-queries of the 1 old"):
        replay_memory(str(path), AtomicDocids.build([*DOCS, "d7"]), ["d7"])
    with pytest.raises(MissingFileError, match="pseudo-query file .*nope.jsonl does not exist"):
        replay_memory(str(tmp_path / "nope.jsonl"), scheme, ["d1"])
    with pytest.raises(ConfigError, match="replay=True needs pseudo_queries"):
        continual_dsi("tiny", str(tmp_path / "work"), replay=True)


def test_report_table_and_plot_without_matplotlib(tmp_path, monkeypatch):
    rows = [{"phase": "phase1", "steps": 3, "d0_hits@1": 1.0, "forgetting_hits@1": None},
            {"phase": "phase2_plain", "steps": 2, "d0_hits@1": 0.25, "forgetting_hits@1": 0.75}]
    table = markdown_table(rows).splitlines()
    assert table[2].split("|")[1].strip() == "phase1" and "0.7500" in table[3]
    assert table[2].rstrip(" |").endswith("-")        # no forgetting for phase 1
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert write_plot(rows, tmp_path / "continual.png") is False
    assert not (tmp_path / "continual.png").exists()
