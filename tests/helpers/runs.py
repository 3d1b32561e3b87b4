"""Reading TREC run files back in tests."""
from __future__ import annotations

from pathlib import Path


def run_order(path: Path) -> dict[str, list[str]]:
    """Each query's document ids in rank order, from a TREC run file."""
    ranked: dict[str, list[tuple[int, str]]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, rank, *_ = line.split()
        ranked.setdefault(qid, []).append((int(rank), doc))
    return {qid: [doc for _, doc in sorted(rows)] for qid, rows in ranked.items()}
