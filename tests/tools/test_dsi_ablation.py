"""tools/dsi_ablation.py: every row is dsi_scifact.gin with its ingredient switched, each row's
bindings parse and type-check against the jobs, and the table (CSV + markdown) reads finished rows,
the full row's untrained model and dense baseline, and signs each ingredient's effect on R@10."""
import argparse
import csv
import json

import gin
import pytest

from irjax import gin_config
from tests.helpers.repo_scripts import load_tool

ablation = load_tool("dsi_ablation")
pytestmark = pytest.mark.usefixtures("clean_gin")


@pytest.mark.parametrize("row", [r for r in ablation.ROWS], ids=lambda r: r.name)
def test_every_row_is_a_valid_config(row, tmp_path):
    args = argparse.Namespace(
        dual_encoder="de", data_dir="scifact", steps=7, pseudo_queries="pq.jsonl", bind=None,
        base=ablation.BASE_GIN)
    command = ablation.row_command(row, tmp_path, args)
    bindings = [arg[len("--gin."):] for arg in command if arg.startswith("--gin.")]
    gin_config.parse([ablation.BASE_GIN], bindings)   # parses and type-checks every binding
    assert gin.query_parameter("TrainerConfig.num_steps") == 7
    assert gin.query_parameter("WORKDIR/macro.value") == str(tmp_path / row.name)
    assert gin.query_parameter("train_dsi.evaluate_init") is (row.name == "full")


def write_row(out, name, r10, sub=""):
    path = out / name / sub if sub else out / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.json").write_text(json.dumps({
        "metrics": {"nDCG@10": r10 - 0.1, "R@10": r10, "R@100": min(1.0, r10 + 0.05),
                    "RR@10": 0.5}, "timings": {"queries_per_s": 9.0}}))


def test_table_signs_each_ingredients_effect(tmp_path):
    for name, r10 in [("full", 0.90), ("no_spans", 0.85), ("plus_sentences", 0.92),
                      ("semantic", 0.60)]:
        write_row(tmp_path, name, r10)
    write_row(tmp_path, "full", 0.86, "init")
    write_row(tmp_path, "full", 0.86, "dense")
    (tmp_path / "rows.json").write_text(json.dumps({"no_spans": {"minutes": 12.5}}))
    assert ablation.main(["--out", str(tmp_path), "--table-only"]) == 0
    rows = {r["row"]: r for r in csv.DictReader(open(tmp_path / "ablation.csv"))}
    assert list(rows) == ["full", "untrained", "dual encoder", "no_spans", "plus_sentences",
                          "semantic"]
    assert rows["full"]["effect_R@10"] == "" and rows["dual encoder"]["effect_R@10"] == ""
    assert rows["no_spans"]["effect_R@10"] == "+0.0500"      # spans help: 0.90 with, 0.85 without
    assert rows["plus_sentences"]["effect_R@10"] == "+0.0200"  # sentences help: 0.92 with
    assert rows["semantic"]["effect_R@10"] == "+0.3000"      # atomic beats semantic
    assert rows["untrained"]["effect_R@10"] == "+0.0400"     # training helps
    assert rows["no_spans"]["minutes"] == "12.5"
    table = (tmp_path / "ablation.md").read_text()
    assert "| no_spans | 0.7500 | 0.8500 | 0.9000 | +0.0500 |" in table
    assert "Pradeep" in table


def test_dry_run_and_skips(tmp_path, capsys):
    assert ablation.main(["--out", str(tmp_path), "--dry-run", "--rows", "full,plus_generated"]) == 0
    out = capsys.readouterr().out
    assert "plus_generated: skipped (needs --pseudo-queries)" in out
    assert "--gin_file=gin/train/dsi_scifact.gin" in out
    with pytest.raises(SystemExit):
        ablation.main(["--out", str(tmp_path), "--rows", "nonsense"])
