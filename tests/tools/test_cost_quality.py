"""tools/cost_quality.py --smoke: every representation is built over the same MiniLM vectors of a
SciFact subset, with bytes per document from the codes, and the table, CSV and plot are written."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _learned_workdir(tmp_path: Path) -> Path:
    """A trained representation's workdir as its job writes it (the fields learned_row reads)."""
    workdir = tmp_path / "jpq_run"
    workdir.mkdir(parents=True)
    (workdir / "metrics.json").write_text(json.dumps({
        "metrics": {"nDCG@10": 0.61, "R@10": 0.8, "R@100": 0.9, "RR@10": 0.5},
        "dataset": "scifact", "split": "test", "model": "minilm-jpq+pq48", "num_queries": 5,
        "timings": {"index_build_s": 2.0, "search_s": 0.5, "encode_queries_s": 0.01},
        "bytes_per_doc": 48}))
    return workdir


def test_cost_quality_smoke(tmp_path):
    data = Path(os.environ.get("IRJAX_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data / "scifact" / "corpus.jsonl").exists():
        pytest.skip(f"SciFact not found under {data}")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "IRJAX_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "tools/cost_quality.py", "--smoke", "--out",
                           str(tmp_path / "out"), "--learned", str(_learned_workdir(tmp_path)),
                           f"JPQ labelled={_learned_workdir(tmp_path / 'again')}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = {r["representation"]: r for r in csv.DictReader(open(tmp_path / "out" / "cost_quality.csv"))}
    bytes_per_doc = {name: float(r["bytes_per_doc"]) for name, r in rows.items() if r["bytes_per_doc"]}
    assert bytes_per_doc["float16"] == 768 and bytes_per_doc["int8"] == 388
    assert (bytes_per_doc["pq m=48"], bytes_per_doc["pq m=24"], bytes_per_doc["binary"]) == (48, 24, 48)
    ndcg = {name: float(r["nDCG@10"]) for name, r in rows.items()}
    assert abs(ndcg["float16"] - ndcg["exact float32"]) < 1e-3  # float16 keeps the ranking
    assert ndcg["binary + rerank 100"] >= ndcg["binary"]  # the rerank sees the whole subset's top
    assert "BM25 (reference)" in rows and (tmp_path / "out" / "cost_quality.png").stat().st_size > 0
    assert "| scifact/test | int8 |" in (tmp_path / "out" / "cost_quality.md").read_text()
    jpq = rows["minilm-jpq+pq48"]  # the learned row: its workdir's numbers, q/s from its timings
    assert (float(jpq["bytes_per_doc"]), float(jpq["nDCG@10"])) == (48, 0.61)
    assert float(jpq["queries_per_s"]) == 10 and float(jpq["query_encode_ms"]) == 2
    assert float(rows["exact float32"]["query_encode_ms"]) > 0
    assert rows["JPQ labelled"]["nDCG@10"] == jpq["nDCG@10"]  # LABEL=WORKDIR names the row


def test_cost_quality_rejects_a_workdir_without_bytes_per_doc(tmp_path):
    workdir = _learned_workdir(tmp_path)
    record = json.loads((workdir / "metrics.json").read_text())
    del record["bytes_per_doc"]
    (workdir / "metrics.json").write_text(json.dumps(record))
    proc = subprocess.run([sys.executable, "tools/cost_quality.py", "--out", str(tmp_path / "o"),
                           "--learned", str(workdir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "missing ['bytes_per_doc']" in proc.stderr
    assert str(workdir / "metrics.json") in proc.stderr and not (tmp_path / "o").exists()


def test_pareto_frontier_keeps_only_undominated_rows():
    sys.path.insert(0, str(ROOT / "tools"))
    from cost_quality import pareto_frontier

    rows = [{"name": n, "bytes_per_doc": b, "nDCG@10": q} for n, b, q in
            [("a", 1536, 0.70), ("b", 48, 0.62), ("c", 64, 0.60), ("d", 48, 0.65), ("e", 400, 0.70)]]
    assert [r["name"] for r in pareto_frontier(rows)] == ["d", "e"]
