"""Typed, validated loading of a BEIR-layout collection (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).

Everything downstream (BM25, dual encoders, metrics) trusts these structures, so the loader refuses
malformed input with an error naming the file, the 1-based line and the field, and counts (never
silently drops) anything unusual but valid. Decisions, applied the same way to every file:

* A UTF-8 byte-order mark at the start of a file is rejected (re-save the file without BOM): a BOM
  would otherwise corrupt the first `_id` or the qrels header without anyone noticing.
* `_id` must be a JSON string: BEIR ids are strings, and converting numbers would hide ids such as
  "007" vs 7 that then fail to match qrels. Ids must be non-empty, without surrounding whitespace
  or tabs, because qrels match them byte for byte.
* Blank (whitespace-only) lines are skipped and counted per file in the report.
* A document with an empty text but a title is valid and counted; a document with neither is also
  kept and counted (`empty_documents`), because real collections have them (Cranfield 471 and 995,
  the latter judged relevant) and dropping them would break the qrels that name them.
* A query with empty text is an error: it cannot be encoded or evaluated meaningfully.
* Qrels scores must be integers; zero and negative grades are kept as given and counted.
* Every id and text must be real text (`text.text_problem`): a JSON escape can produce a lone
  UTF-16 surrogate or a NUL, which crash C code far downstream (pytrec_eval, tokenizers).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from irjax.errors import UserError
from irjax.paths import AnyPath, absolute, as_path

from irjax.data.text import text_problem

QRELS_HEADER = ("query-id", "corpus-id", "score")
_BOM = b"\xef\xbb\xbf"
_INTEGER = re.compile(r"-?[0-9]+")
_JSON_KIND = {dict: "object", list: "array", str: "string", int: "number", float: "number",
              bool: "boolean", type(None): "null"}


class CollectionError(ValueError, UserError):
    """Bad collection input; the message names the file, the 1-based line and the field."""


def _error(path: AnyPath, line: int | None, message: str, field_name: str | None = None) -> CollectionError:
    where = f"{path}:{line}" if line is not None else str(path)
    what = f"field '{field_name}': " if field_name else ""
    return CollectionError(f"{where}: {what}{message}")


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """The single string every index sees, so BM25 and dense models agree on what a document is."""
        if self.title.strip() and self.text.strip():
            return f"{self.title} {self.text}"
        return self.title if self.title.strip() else self.text


_ANOMALIES = {
    "queries_without_judgments_in_split": "queries have no judgments in this split and are not evaluated",
    "queries_without_relevant_documents": "evaluated queries have no judgment with score > 0",
    "zero_score_judgments": "judgments have score 0 (judged non-relevant; kept)",
    "negative_score_judgments": "judgments have a negative score (kept as given)",
    "documents_with_empty_text_but_title": "documents have empty text and are indexed by title only",
    "empty_documents": "documents have neither title nor text (kept so qrels naming them stay valid)",
    "blank_lines_corpus": "blank lines skipped in corpus.jsonl",
    "blank_lines_queries": "blank lines skipped in queries.jsonl",
    "blank_lines_qrels": "blank lines skipped in the qrels file",
}
_TOTALS = ("documents", "queries", "judgments", "eval_queries")


@dataclass(frozen=True)
class LoadReport:
    """Totals plus counts of unusual-but-valid input, so nothing skipped or odd goes unnoticed."""

    counts: dict[str, int]

    def anomalies(self) -> dict[str, int]:
        return {k: v for k, v in self.counts.items() if k not in _TOTALS and v}

    def summary(self) -> str:
        """One line per non-zero anomaly count; an empty string when the collection is clean."""
        return "\n".join(f"{n} {_ANOMALIES.get(k, k)}" for k, n in self.anomalies().items())


def _read_lines(path: AnyPath) -> tuple[list[str], bytes]:
    """Decodes a whole file strictly as UTF-8 and splits it on '\\n' only (JSON may hold U+2028)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _error(path, None, "file not found; a BEIR collection folder needs corpus.jsonl, "
                     "queries.jsonl and qrels/<split>.tsv") from None
    if data.startswith(_BOM):
        raise _error(path, 1, "file starts with a UTF-8 byte-order mark (BOM); re-save it as UTF-8 "
                     "without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        raise _error(path, line, f"invalid UTF-8 byte 0x{data[e.start]:02x} at byte offset {column} "
                     f"of the line (offset {e.start} in the file); re-encode the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines, data


def _json_object(path: AnyPath, number: int, line: str) -> dict:
    """One non-blank JSONL line as a JSON object, or an error naming file:line."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise _error(path, number, f"malformed JSON ({e.msg} at column {e.colno}); fix or remove "
                     "this line") from None
    if not isinstance(obj, dict):
        raise _error(path, number, f"expected a JSON object such as {{\"_id\": \"1\", \"text\": "
                     f"\"...\"}}, got a JSON {_JSON_KIND.get(type(obj), type(obj).__name__)}")
    return obj


def _json_objects(path: AnyPath, lines: list[str], counts: Counter, blank_key: str) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            counts[blank_key] += 1
            continue
        yield number, _json_object(path, number, line)


def _string(path: AnyPath, number: int, obj: dict, key: str, default: str | None = None) -> str:
    if key not in obj:
        if default is not None:
            return default
        raise _error(path, number, "missing; every line needs it", key)
    value = obj[key]
    if not isinstance(value, str):
        kind = _JSON_KIND.get(type(value), type(value).__name__)
        hint = f"; BEIR ids are strings, write \"_id\": \"{value}\"" if key == "_id" else ""
        raise _error(path, number, f"must be a JSON string, got {kind} {value!r}{hint}", key)
    problem = text_problem(value)
    if problem is not None:
        raise _error(path, number, problem, key)
    return value


def _plain_id(path: AnyPath, number: int, obj: dict) -> str:
    doc_id = _string(path, number, obj, "_id")
    if not doc_id or doc_id != doc_id.strip() or "\t" in doc_id:
        raise _error(path, number, f"{doc_id!r} must be non-empty without surrounding whitespace or "
                     "tabs, because qrels match ids exactly", "_id")
    return doc_id


def duplicate_id_error(path: AnyPath, number: int, doc_id: str, first: int) -> CollectionError:
    return _error(path, number, f"duplicate id {doc_id!r}, first seen on line {first}; ids must be "
                  "unique, remove or rename one of them", "_id")


def _identifier(path: AnyPath, number: int, obj: dict, seen: dict[str, int]) -> str:
    doc_id = _plain_id(path, number, obj)
    if doc_id in seen:
        raise duplicate_id_error(path, number, doc_id, seen[doc_id])
    seen[doc_id] = number
    return doc_id


def parse_document(path: AnyPath, number: int, line: str) -> Document:
    """One non-blank corpus.jsonl line as a Document, checked as the whole-file loader checks it
    (the caller checks ids for duplicates); errors name file:line and field."""
    obj = _json_object(path, number, line)
    return _document(path, number, obj, _plain_id(path, number, obj))


def _document(path: AnyPath, number: int, obj: dict, doc_id: str) -> Document:
    return Document(doc_id, _string(path, number, obj, "title", default=""),
                    _string(path, number, obj, "text"))


def _parse_corpus(path: AnyPath) -> tuple[list[Document], Counter, str]:
    lines, data = _read_lines(path)
    counts: Counter = Counter(blank_lines_corpus=0, documents_with_empty_text_but_title=0, empty_documents=0)
    seen: dict[str, int] = {}
    documents = []
    for number, obj in _json_objects(path, lines, counts, "blank_lines_corpus"):
        document = _document(path, number, obj, _identifier(path, number, obj, seen))
        if not document.text.strip():
            counts["documents_with_empty_text_but_title" if document.title.strip()
                   else "empty_documents"] += 1
        documents.append(document)
    if not documents:
        raise _error(path, None, "contains no documents; expected one JSON object per line")
    counts["documents"] = len(documents)
    return documents, counts, hashlib.sha256(data).hexdigest()


def _parse_queries(path: AnyPath) -> tuple[dict[str, str], Counter]:
    lines, _ = _read_lines(path)
    counts: Counter = Counter(blank_lines_queries=0)
    seen: dict[str, int] = {}
    queries: dict[str, str] = {}
    for number, obj in _json_objects(path, lines, counts, "blank_lines_queries"):
        query_id = _identifier(path, number, obj, seen)
        text = _string(path, number, obj, "text")
        if not text.strip():
            raise _error(path, number, f"query {query_id!r} has empty text; fill it in or remove the "
                         "query (and its qrels)", "text")
        queries[query_id] = text
    if not queries:
        raise _error(path, None, "contains no queries; expected one JSON object per line")
    counts["queries"] = len(queries)
    return queries, counts


def _parse_qrels(path: AnyPath) -> tuple[dict[str, dict[str, int]], Counter, dict[tuple[str, str], int]]:
    """Returns qrels, counts and the line of each (query, document) pair for later cross-checks."""
    lines, _ = _read_lines(path)
    expected = "\t".join(QRELS_HEADER)
    if not lines or lines[0].rstrip("\r") != expected:
        found = repr(lines[0].rstrip("\r")) if lines else "an empty file"
        raise _error(path, 1, f"expected the tab-separated header {expected!r}, found {found}; add or "
                     "fix the header line")
    counts: Counter = Counter(blank_lines_qrels=0, zero_score_judgments=0, negative_score_judgments=0)
    qrels: dict[str, dict[str, int]] = {}
    line_of: dict[tuple[str, str], int] = {}
    for number, line in enumerate(lines[1:], 2):
        line = line.rstrip("\r")
        if not line.strip():
            counts["blank_lines_qrels"] += 1
            continue
        columns = line.split("\t")
        if len(columns) != 3:
            raise _error(path, number, f"expected 3 tab-separated columns (query-id, corpus-id, score), "
                         f"found {len(columns)}: {line!r}")
        query_id, doc_id, score = columns
        for name, value in (("query-id", query_id), ("corpus-id", doc_id)):
            if not value or value != value.strip():
                raise _error(path, number, f"{value!r} must be non-empty without surrounding whitespace", name)
            if (problem := text_problem(value)) is not None:
                raise _error(path, number, problem, name)
        if not _INTEGER.fullmatch(score):
            raise _error(path, number, f"score {score!r} is not an integer; relevance grades must be "
                         "whole numbers such as 0, 1, 2", "score")
        if (query_id, doc_id) in line_of:
            raise _error(path, number, f"duplicate judgment for query {query_id!r} and document {doc_id!r}, "
                         f"first given on line {line_of[query_id, doc_id]}; keep only one")
        grade = int(score)
        counts["zero_score_judgments"] += grade == 0
        counts["negative_score_judgments"] += grade < 0
        line_of[query_id, doc_id] = number
        qrels.setdefault(query_id, {})[doc_id] = grade
    if not qrels:
        raise _error(path, None, "contains a header but no judgments")
    counts["judgments"] = len(line_of)
    return qrels, counts, line_of


def load_corpus(path: str | os.PathLike) -> list[Document]:
    """Documents of a corpus.jsonl in file order."""
    return _parse_corpus(as_path(path))[0]


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    """All queries of a queries.jsonl, id -> text, in file order."""
    return _parse_queries(as_path(path))[0]


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Judgments of one qrels .tsv: query id -> {document id: grade}."""
    return _parse_qrels(as_path(path))[0]


def available_splits(path: str | os.PathLike) -> list[str]:
    """Names of the qrels/<split>.tsv files of a collection folder, sorted."""
    qrels_dir = as_path(path) / "qrels"
    if not qrels_dir.is_dir():
        return []
    if isinstance(qrels_dir, Path):
        return sorted(p.stem for p in qrels_dir.glob("*.tsv"))
    # etils' glob is not used on remote folders: its fsspec backend may drop the URI prefix
    return sorted(p.stem for p in qrels_dir.iterdir() if p.name.endswith(".tsv") and p.stem)


@dataclass(frozen=True, repr=False)
class Collection:
    """One split of one collection, loaded and cross-checked; treat it as read-only."""

    name: str
    split: str
    path: AnyPath  # a local folder or a URI (irjax/paths.py)
    documents: Sequence[Document]  # a list, or StreamedDocuments read from disk
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    report: LoadReport
    _corpus_sha256: str | None = field(default=None, init=False, compare=False)
    # (sha256 of the corpus file, how many of its leading documents this collection holds): what
    # precomputed corpus embeddings must have been encoded from. None for hand-built ones.
    corpus_rows: tuple[str, int] | None = field(default=None, init=False, compare=False)
    _doc_ids: list[str] | None = field(default=None, init=False, compare=False)

    def __repr__(self) -> str:
        return (f"Collection(name={self.name!r}, split={self.split!r}, path={str(self.path)!r}, "
                f"documents={len(self.documents)}, queries={len(self.queries)}, judged_queries={len(self.qrels)})")

    @property
    def doc_ids(self) -> Sequence[str]:
        """Document ids in corpus order: row i of any embedding matrix belongs to doc_ids[i]."""
        if self._doc_ids is None:
            object.__setattr__(self, "_doc_ids", [d.doc_id for d in self.documents])
        return self._doc_ids  # type: ignore[return-value]

    def eval_queries(self) -> dict[str, str]:
        """Queries judged in this split, in queries.jsonl order; the ones every metric averages over."""
        return {qid: text for qid, text in self.queries.items() if qid in self.qrels}

    def first_judged_queries(self, n: int) -> "Collection":
        """The same corpus judged on only its first `n` judged queries (queries.jsonl order): a
        fixed, reproducible subset for query-time methods too slow for a whole split."""
        if n < 1:
            raise ValueError(f"max_queries={n} must be >= 1 (judged queries to evaluate)")
        keep = list(self.eval_queries())[:n]
        subset = replace(self, qrels={qid: self.qrels[qid] for qid in keep})
        for name in ("_corpus_sha256", "corpus_rows", "_doc_ids"):  # same corpus, same caches
            object.__setattr__(subset, name, getattr(self, name))
        return subset

    def fingerprint(self) -> str:
        """Hex sha256 keying embedding caches: of the corpus.jsonl bytes that were parsed, or, for a
        collection built by hand, of its documents (the file may not match them)."""
        if self._corpus_sha256 is None:
            digest = hashlib.sha256()
            for d in self.documents:
                digest.update(json.dumps([d.doc_id, d.title, d.text], ensure_ascii=False).encode() + b"\n")
            object.__setattr__(self, "_corpus_sha256", digest.hexdigest())
        return self._corpus_sha256  # type: ignore[return-value]


def _unknown(path: AnyPath, line_of: dict[tuple[str, str], int], position: int, known: set[str] | dict[str, str],
             kind: str, column: str, source: str) -> None:
    """Rejects qrels naming ids absent from `source`, citing the first such line and how many there are."""
    bad = [(line, pair[position]) for pair, line in line_of.items() if pair[position] not in known]
    if bad:
        line, value = min(bad)
        examples = sorted({v for _, v in bad})[:5]
        raise _error(path, line, f"{kind} {value!r} is not in {source} ({len(bad)} judgment lines name "
                     f"unknown {column}s, e.g. {examples}); fix the ids or remove those lines", column)


def load_collection(path: str | os.PathLike, split: str, streamed: bool = False,
                    max_documents: int | None = None) -> Collection:
    """Loads corpus, all queries and the `split` qrels of a BEIR folder, and checks they agree.

    `streamed` keeps the corpus on disk: `documents` and `doc_ids` are sequences read through a
    cached byte-offset index (corpus_index.py), checked line by line the same way, so a corpus
    far larger than memory can be evaluated and each process reads only its own rows.
    `max_documents` (streamed only) keeps the corpus's first documents: a prefix of one large
    file serves every corpus size of a scaling study, and its embeddings are a prefix too."""
    root = absolute(path)
    if not root.is_dir():
        raise CollectionError(f"{root}: not a directory; pass the folder holding corpus.jsonl, "
                              "queries.jsonl and qrels/")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = available_splits(root)
        raise CollectionError(f"{qrels_path}: split {split!r} not found; available splits: "
                              f"{splits if splits else 'none (no qrels/*.tsv files)'}")
    doc_ids: Any
    if streamed:
        from irjax.data.corpus_index import CorpusIndex, StreamedDocuments, StreamedIds

        index = CorpusIndex.open(root / "corpus.jsonl")
        documents, doc_ids = StreamedDocuments(index, limit=max_documents), StreamedIds(
            index, limit=max_documents)
        corpus_rows = (index.sha256, len(documents))
        if len(documents) == len(index):
            corpus_sha256, counts = index.sha256, Counter(index.counts, documents=len(index))
        else:  # a prefix: its own fingerprint; the file's anomaly counts would not be its own
            corpus_sha256 = hashlib.sha256(f"{index.sha256}:first:{len(documents)}".encode()
                                           ).hexdigest()
            counts = Counter(documents=len(documents), corpus_file_documents=len(index))
    else:
        if max_documents is not None:
            raise ValueError("max_documents needs streamed=True (a prefix of the corpus file)")
        documents, counts, corpus_sha256 = _parse_corpus(root / "corpus.jsonl")
        doc_ids = {d.doc_id for d in documents}
        corpus_rows = (corpus_sha256, len(documents))
    queries, query_counts = _parse_queries(root / "queries.jsonl")
    qrels, qrels_counts, line_of = _parse_qrels(qrels_path)
    _unknown(qrels_path, line_of, 0, queries, "query", "query-id", "queries.jsonl")
    _unknown(qrels_path, line_of, 1, doc_ids, "document", "corpus-id", "corpus.jsonl")
    counts.update(query_counts)
    counts.update(qrels_counts)
    counts["eval_queries"] = len(qrels)
    counts["queries_without_judgments_in_split"] = len(queries) - len(qrels)
    counts["queries_without_relevant_documents"] = sum(
        1 for grades in qrels.values() if not any(g > 0 for g in grades.values()))
    ordered = {k: counts[k] for k in _TOTALS}
    ordered.update({k: counts[k] for k in _ANOMALIES})
    ordered.update({k: v for k, v in counts.items() if k not in ordered})
    collection = Collection(root.name, split, root, documents, queries, qrels, LoadReport(ordered))
    object.__setattr__(collection, "_corpus_sha256", corpus_sha256)
    if streamed:
        object.__setattr__(collection, "_doc_ids", doc_ids)
    object.__setattr__(collection, "corpus_rows", corpus_rows)
    return collection
