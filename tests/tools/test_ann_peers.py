"""tools/ann_peers.py --smoke: every system is measured against exact search and the best setting
per recall target is reported with its ratio to faiss HNSW."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ann_peers_smoke(tmp_path):
    proc = subprocess.run([sys.executable, "tools/ann_peers.py", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "ann_peers.json").read_text())
    systems = {r["system"] for r in result["rows"]}
    assert any("ScaNN" in s for s in systems) and any("HNSW" in s for s in systems)
    assert any("IVF-PQ" in s for s in systems)
    assert all(0 <= r["recall"] <= 1 and r["queries_per_s"] > 0 for r in result["rows"])
    hnsw = [r for r in result["rows"] if "HNSW" in r["system"]]
    assert max(r["recall"] for r in hnsw) > 0.9  # clustered vectors: HNSW finds them
    assert "| 0.90 |" in (tmp_path / "ann_peers.md").read_text()
