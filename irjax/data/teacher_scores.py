"""Teacher score files for margin-MSE distillation: read them strictly, write them from any run.

Margin-MSE trains the student so that score(q, pos) - score(q, neg) matches a teacher's (usually a
cross-encoder's) margin for the same triple, so the student needs the teacher's score of every
(query, document) it will see. Two file formats are accepted and told apart by the first data line:

* TSV: `qid<TAB>docid<TAB>score`, optionally after a header `qid docid score` or
  `query-id corpus-id score` (tab-separated);
* TREC run: `qid Q0 docid rank score tag` (whitespace-separated); the score column is used.

Every later line must have the same format. Malformed lines, non-finite scores and repeated
(query, document) pairs raise an error naming the file and the 1-based line; blank lines are
skipped and counted.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

from irjax.data.runs import Run, rank_documents, write_trec_run
from irjax.errors import InputFileError, MissingFileError
from irjax.files import atomic_write_text

log = logging.getLogger(__name__)

TeacherScores = Run
"""query id -> {doc id: teacher score}."""

_HEADERS = (("qid", "docid", "score"), ("query-id", "corpus-id", "score"))
FORMATS = ("tsv", "trec")


def _detect(path: Path, number: int, line: str) -> str:
    if len(line.split("\t")) == 3:
        return "tsv"
    if len(line.split()) == 6:
        return "trec"
    raise InputFileError(f"{path}:{number}: cannot tell the format: expected 3 tab-separated fields "
                         f"(qid, docid, score) or a 6-field TREC run line (qid Q0 docid rank score tag), "
                         f"got {line[:100]!r}")


def _fields(path: Path, number: int, line: str, fmt: str) -> tuple[str, str, str]:
    if fmt == "tsv":
        fields = line.split("\t")
        if len(fields) != 3:
            raise InputFileError(f"{path}:{number}: expected 3 tab-separated fields (qid, docid, score) "
                                 f"like the lines above, found {len(fields)}: {line[:100]!r}")
        qid, doc_id, score = (f.strip() for f in fields)
        if not qid or not doc_id:
            raise InputFileError(f"{path}:{number}: empty query or document id in {line[:100]!r}")
        return qid, doc_id, score
    fields = line.split()
    if len(fields) != 6:
        raise InputFileError(f"{path}:{number}: expected 6 whitespace-separated TREC run fields (qid Q0 "
                             f"docid rank score tag) like the lines above, found {len(fields)}: "
                             f"{line[:100]!r}")
    try:
        int(fields[3])
    except ValueError:
        raise InputFileError(f"{path}:{number}: rank {fields[3]!r} is not an integer") from None
    return fields[0], fields[2], fields[4]


def read_teacher_scores(path: str | os.PathLike) -> TeacherScores:
    """Parses a TSV or TREC teacher file (see the module docstring for the rules)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such teacher score file") from None
    except UnicodeDecodeError as e:
        raise InputFileError(f"{path}: not valid UTF-8 ({e})") from None
    scores: TeacherScores = {}
    first_line: dict[tuple[str, str], int] = {}
    fmt: str | None = None
    blank = 0
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r")
        if not line.strip():
            blank += number < len(lines)  # the empty string after a final newline is not a line
            continue
        if fmt is None:
            fmt = _detect(path, number, line)
            if fmt == "tsv" and tuple(f.strip() for f in line.split("\t")) in _HEADERS:
                continue
        qid, doc_id, score_text = _fields(path, number, line, fmt)
        try:
            score = float(score_text)
        except ValueError:
            raise InputFileError(f"{path}:{number}: score {score_text!r} is not a number") from None
        if not math.isfinite(score):
            raise InputFileError(f"{path}:{number}: score {score_text!r} is not finite; a teacher "
                                 "margin needs real numbers")
        if (qid, doc_id) in first_line:
            raise InputFileError(f"{path}:{number}: query {qid!r} and document {doc_id!r} already "
                                 f"scored on line {first_line[qid, doc_id]}; keep one score per pair")
        first_line[qid, doc_id] = number
        scores.setdefault(qid, {})[doc_id] = score
    if not scores:
        raise InputFileError(f"{path}: no teacher scores found (empty file or header only)")
    log.info("%s: %s format, %d scores for %d queries, %d blank lines skipped", path, fmt,
             len(first_line), len(scores), blank)
    return scores


def write_teacher_scores(run: Mapping[str, Mapping[str, float]], path: str | os.PathLike,
                         fmt: str = "tsv") -> Path:
    """Writes any run (e.g. a cross-encoder re-ranking of BM25 candidates) as a teacher file.

    Written atomically, queries sorted by id and documents in rank order; floats use repr() so
    reading the file back gives the identical scores.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown teacher file format {fmt!r}; choose one of {FORMATS}")
    for qid, docs in run.items():
        for doc_id, score in docs.items():
            if not math.isfinite(float(score)):
                raise ValueError(f"query {qid!r}, document {doc_id!r}: score {score!r} is not finite")
    if fmt == "trec":
        return write_trec_run(run, path, tag="teacher")
    lines = []
    for qid in sorted(run):
        for doc_id, score in rank_documents(run[qid]):
            for kind, value in (("query id", qid), ("doc id", doc_id)):
                if not value or value != value.strip() or "\t" in value or "\n" in value:
                    raise ValueError(f"{kind} {value!r} cannot be written to a TSV teacher file: it "
                                     "must be non-empty without tabs, newlines or surrounding spaces")
            lines.append(f"{qid}\t{doc_id}\t{float(score)!r}\n")
    return atomic_write_text(path, "".join(lines))
