"""Generated (document, query) pairs as training data: the JSONL the generate_queries job writes
(`{"doc_id", "query", "kept"[, "query_id"]}` per line), read back as dual-encoder training pairs
or as DSI pseudo queries.

Rows with `"kept": false` (dropped by the round-trip filter) are skipped, so the filter's full
output and the pairs file both work. A row naming a document that is not in the corpus, or
without a query, is an error naming the line: training on a wrong pairing teaches nothing and
would go unnoticed.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from irjax.data.stage_files import read_rows
from irjax.data.training_examples import TrainingPair
from irjax.errors import InputFileError, MissingFileError

QUERY_ID_PREFIX = "generated-"


def _checked(path: Path, lineno: int, row: Mapping[str, Any]) -> tuple[str, str, bool]:
    doc_id, query, kept = row.get("doc_id"), row.get("query"), row.get("kept", True)
    if not isinstance(doc_id, str) or not isinstance(query, str) or not isinstance(kept, bool):
        raise InputFileError(f"{path}:{lineno}: expected 'doc_id' (string), 'query' (string) and "
                             f"optionally 'kept' (true/false), got {dict(row)!r}")
    return doc_id, query, kept


def read_generated(path: str | Path) -> list[tuple[str, str, str]]:
    """(query_id, doc_id, query) of every kept row with a non-empty query, in file order."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"generated-query file {path} does not exist; write it with the "
                               "generate_queries job (gin/train/qgen_scifact.gin) or fix the path")
    out = []
    for lineno, row in enumerate(read_rows(path), 1):
        doc_id, query, kept = _checked(path, lineno, row)
        if kept and query.strip():
            query_id = row.get("query_id", f"{QUERY_ID_PREFIX}{lineno}")
            out.append((str(query_id), doc_id, query))
    return out


def generated_training_pairs(path: str | Path, contents: Mapping[str, str]) -> list[TrainingPair]:
    """The kept generated queries as positives of their source documents.

    `contents`: doc_id -> the document's title + text (Document.contents)."""
    pairs = []
    for query_id, doc_id, query in read_generated(path):
        if doc_id not in contents:
            raise InputFileError(f"{path}: query {query_id} names document {doc_id!r}, which is "
                                 "not in the collection's corpus (generated for another one?)")
        pairs.append(TrainingPair(query_id, query, doc_id, contents[doc_id]))
    if not pairs:
        raise InputFileError(f"{path} holds no kept generated query; nothing to train on")
    return pairs


def pseudo_queries(rows: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    """doc_id -> its kept queries, the `DSIData.pseudo_queries` layout."""
    out: dict[str, list[str]] = {}
    for _, doc_id, query in rows:
        out.setdefault(doc_id, []).append(query)
    return out
