"""A small BEIR collection whose files a test can replace by raw text or bytes (loader tests)."""
from __future__ import annotations

import json
from pathlib import Path

DOCS = [
    {"_id": "d1", "title": "Alpha", "text": "first document"},
    {"_id": "d2", "title": "", "text": "no title here", "metadata": {"x": 1}},
    {"_id": "d3", "title": "Title only", "text": ""},
    {"_id": "d4", "text": "title key missing"},
]
QUERIES = [{"_id": "q1", "text": "alpha?"}, {"_id": "q2", "text": "beta?"}, {"_id": "q3", "text": "unjudged"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td3\t1\n"


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_collection(root: Path, corpus: str | bytes | None = None, queries: str | bytes | None = None,
                     qrels: str | bytes | None = None, split: str = "test") -> Path:
    """A small valid collection; any of the three files can be replaced by raw text or bytes."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    for rel, content, default in (("corpus.jsonl", corpus, jsonl(DOCS)), ("queries.jsonl", queries, jsonl(QUERIES)),
                                  (f"qrels/{split}.tsv", qrels, QRELS)):
        content = default if content is None else content
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (root / rel).write_bytes(data)
    return root
