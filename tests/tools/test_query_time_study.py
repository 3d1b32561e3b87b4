"""tools/query_time_study.py: a subset row's nDCG@10 change is measured against its base on the
same queries; added cost sums the timings that are the method's own; a real BM25 run on Cranfield
goes through the whole command (run, skip on rerun, table)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import query_time_study as study  # noqa: E402


def _workdir(path: Path, per_query: dict[str, float], timings: dict[str, float]) -> Path:
    path.mkdir(parents=True)
    (path / "per_query.jsonl").write_text("".join(
        json.dumps({"query_id": q, "nDCG@10": v}) + "\n" for q, v in per_query.items()))
    (path / "metrics.json").write_text(json.dumps({
        "metrics": {"nDCG@10": sum(per_query.values()) / len(per_query), "R@100": 0.5},
        "num_queries": len(per_query), "timings": timings}))
    return path


def test_delta_uses_only_the_rows_queries(tmp_path: Path) -> None:
    base = _workdir(tmp_path / "base", {"a": 0.5, "b": 0.1, "c": 0.9}, {})
    row = _workdir(tmp_path / "row", {"a": 0.7, "b": 0.4}, {})  # first two queries only
    assert study.delta_on_same_queries(row, base) == pytest.approx(((0.7 - 0.5) + (0.4 - 0.1)) / 2)
    stray = _workdir(tmp_path / "stray", {"a": 0.7, "z": 0.4}, {})  # a query the base lacks
    assert study.delta_on_same_queries(stray, base) is None
    assert study.delta_on_same_queries(row, None) is None


def test_added_cost_sums_the_methods_own_timings() -> None:
    timings = {"rerank_ms_per_query": 120.0, "first_stage_ms_per_query": 3.0,
               "rerank_lm_tokens_per_query": 900.0, "rerank_flops_per_query": 1e12}
    assert study.added_cost(timings) == (120.0, 900.0)
    assert study.added_cost({"search_s": 1.0}) == (None, None)


def test_bm25_on_cranfield_runs_once_and_tabulates(tmp_path: Path) -> None:
    data = Path(os.environ.get("IRJAX_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data / "cranfield" / "corpus.jsonl").exists():
        pytest.skip(f"Cranfield not found under {data}")
    env = {**os.environ, "IRJAX_DATA_DIR": str(data)}
    command = [sys.executable, str(ROOT / "tools" / "query_time_study.py"), "--out",
               str(tmp_path / "out"), "--datasets", "cranfield:test", "--methods", "bm25"]
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    rows = json.loads((tmp_path / "out" / "study.json").read_text())
    reference = json.loads((tmp_path / "out" / "cranfield_test" / "bm25" / "metrics.json").read_text())
    assert [r["method"] for r in rows] == ["bm25"]
    assert rows[0]["nDCG@10"] == reference["metrics"]["nDCG@10"] and rows[0]["queries"] == 225
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "irjax.main" not in again.stdout  # nothing rerun
    assert "| cranfield test | bm25 | 225 |" in (tmp_path / "out" / "study.md").read_text()


def test_learned_rows_find_their_base_by_name(tmp_path: Path) -> None:
    dirs = {"bm25": tmp_path / "b", "minilm": tmp_path / "m"}
    assert study.learned_base("bm25-ce-d100", dirs) == "bm25"
    assert study.learned_base("ar2", dirs) is None
    assert study.learned_base("colbert-xtr", dirs) is None  # no such row to compare with
    dirs["embeddinggemma-768"] = tmp_path / "e"
    assert study.learned_base("embeddinggemma-768>>ce-e8-d100", dirs) == "embeddinggemma-768"
    assert study.learned_base("spladev3>>ce", dirs) is None
