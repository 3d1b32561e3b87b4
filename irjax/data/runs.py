"""Runs and qrels in memory and in the standard TREC text formats.

A run maps each query id to the scores of its retrieved documents. Every consumer (the TREC writer,
the metrics, the BM25 top-k) orders documents the same way trec_eval does: by descending score,
ties by descending doc id. Using trec_eval's own tie order means the rank column we write agrees with
how trec_eval / pytrec_eval will rank the file, and every metric sees the same ranking.
"""
from __future__ import annotations

import math
import os
from typing import Mapping

from irjax.data.text import check_text
from irjax.errors import InputFileError, MissingFileError
from irjax.files import atomic_write_text
from irjax.paths import AnyPath, as_path

Run = dict[str, dict[str, float]]
"""query id -> {doc id: score}; higher scores rank first."""

Qrels = dict[str, dict[str, int]]
"""query id -> {doc id: graded relevance}; 0 means judged non-relevant."""


def rank_documents(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """(doc_id, score) pairs in trec_eval order: descending score, then descending doc id.

    NaN scores are rejected because they make any ordering (and therefore any metric) arbitrary.
    """
    items: list[tuple[str, float]] = []
    for doc_id, score in scores.items():
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"document {doc_id!r} has a non-numeric score {score!r}") from None
        if math.isnan(value):
            raise ValueError(f"document {doc_id!r} has a NaN score")
        items.append((doc_id, value))
    return sorted(items, key=lambda item: (item[1], item[0]), reverse=True)


def truncate_run(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """Keeps each query's top `k` documents in trec_eval order (deterministic across ties)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return {qid: dict(rank_documents(docs)[:k]) for qid, docs in run.items()}


def _check_token(kind: str, value: str) -> None:
    """Ids and tags are whitespace-separated fields in TREC files, so they must be non-empty words."""
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise ValueError(f"{kind} {value!r} cannot be written to a TREC file: it must be a non-empty "
                         "string without whitespace")
    check_text(value, f"{kind} {value!r}")


def format_trec_run(run: Mapping[str, Mapping[str, float]], tag: str = "irjax") -> str:
    """The 6-column TREC text (`qid Q0 docid rank score tag`), queries sorted by id, ranks from 1.

    Queries with no documents produce no lines: the format cannot represent them.
    """
    _check_token("run tag", tag)
    lines: list[str] = []
    for qid in sorted(run):
        _check_token("query id", qid)
        for rank, (doc_id, score) in enumerate(rank_documents(run[qid]), start=1):
            _check_token("doc id", doc_id)
            if math.isinf(score):
                raise ValueError(f"query {qid!r}, document {doc_id!r}: infinite score cannot be written")
            # repr() is the shortest text that parses back to the identical float.
            lines.append(f"{qid} Q0 {doc_id} {rank} {score!r} {tag}\n")
    return "".join(lines)


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike,
                   tag: str = "irjax") -> AnyPath:
    """Writes `run` atomically as a TREC run file, so a crash never leaves a truncated run behind."""
    return atomic_write_text(path, format_trec_run(run, tag))


def _fields(path: AnyPath, lineno: int, line: str, expected: int, layout: str) -> list[str]:
    fields = line.split()
    if len(fields) != expected:
        raise InputFileError(f"{path}:{lineno}: expected {expected} whitespace-separated fields "
                             f"({layout}), found {len(fields)}: {line.rstrip()!r}")
    for field in fields:
        check_text(field, f"{path}:{lineno}: field {field!r}")
    return fields


def _lines(path: str | os.PathLike) -> tuple[AnyPath, list[str]]:
    path = as_path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return path, f.readlines()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise InputFileError(f"{path}: not valid UTF-8 text ({e})") from e


def read_trec_run(path: str | os.PathLike) -> Run:
    """Parses a 6-column TREC run. Blank lines are skipped; everything else must be well formed.

    The rank column must be an integer but, as in trec_eval, only the score decides the order.
    """
    path, lines = _lines(path)
    run: Run = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        qid, _, doc_id, rank, score_text, _ = _fields(path, lineno, line, 6, "qid Q0 docid rank score tag")
        try:
            int(rank)
        except ValueError:
            raise InputFileError(f"{path}:{lineno}: rank {rank!r} is not an integer") from None
        try:
            score = float(score_text)
        except ValueError:
            raise InputFileError(f"{path}:{lineno}: score {score_text!r} is not a number") from None
        if not math.isfinite(score):
            raise InputFileError(f"{path}:{lineno}: score {score_text!r} is not a finite number")
        docs = run.setdefault(qid, {})
        if doc_id in docs:
            raise InputFileError(f"{path}:{lineno}: duplicate document {doc_id!r} for query {qid!r}")
        docs[doc_id] = score
    return run


def format_trec_qrels(qrels: Mapping[str, Mapping[str, int]]) -> str:
    """The 4-column TREC qrels text (`qid 0 docid relevance`), sorted by query then doc id."""
    lines: list[str] = []
    for qid in sorted(qrels):
        _check_token("query id", qid)
        for doc_id in sorted(qrels[qid]):
            _check_token("doc id", doc_id)
            relevance = qrels[qid][doc_id]
            if isinstance(relevance, bool) or not isinstance(relevance, int):
                raise ValueError(f"query {qid!r}, document {doc_id!r}: relevance {relevance!r} is not an int")
            lines.append(f"{qid} 0 {doc_id} {relevance}\n")
    return "".join(lines)


def write_trec_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike) -> AnyPath:
    """Writes `qrels` atomically in TREC qrels format (readable by trec_eval and ir-measures)."""
    return atomic_write_text(path, format_trec_qrels(qrels))


def read_trec_qrels(path: str | os.PathLike) -> Qrels:
    """Parses a 4-column TREC qrels file; relevance must be an integer, (qid, docid) unique."""
    path, lines = _lines(path)
    qrels: Qrels = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        qid, _, doc_id, relevance_text = _fields(path, lineno, line, 4, "qid iteration docid relevance")
        try:
            relevance = int(relevance_text)
        except ValueError:
            raise InputFileError(f"{path}:{lineno}: relevance {relevance_text!r} is not an integer") from None
        judged = qrels.setdefault(qid, {})
        if doc_id in judged:
            raise InputFileError(f"{path}:{lineno}: duplicate judgment of document {doc_id!r} for query {qid!r}")
        judged[doc_id] = relevance
    return qrels
