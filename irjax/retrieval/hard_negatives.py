"""BM25-mined hard negatives: documents that look relevant to BM25 but were not judged relevant.

Random negatives are too easy for a dual encoder to learn much from; BM25's top results for a
query share its words, so telling them apart from the positives teaches more. For each judged
query of a split we take BM25's top `depth` documents and keep BM25 ranks `[skip, depth)`
(0-based, counted in the original BM25 ranking), minus *every* judged document of the query,
whatever its grade: judged-relevant ones are positives, and grade-0 ones are left out too so that
the negatives are a clean "BM25 liked it, nobody judged it" set. `skip` > 0 drops the very top
ranks, which are the likeliest unjudged positives (false negatives).

Mining is cached on disk as JSONL, one `{"qid": ..., "negatives": [...]}` line per query, under a
name keyed by the corpus fingerprint, the split's queries and judgments, and the mining
parameters, so changing any of them mines afresh instead of reusing stale negatives. Loading
checks every id against the collection and fails with the file and line of the first problem.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from irjax.data.collection import Collection
from irjax.retrieval.bm25 import BM25Retriever
from irjax.data.runs import rank_documents
from irjax.errors import InputFileError
from irjax.files import atomic_write_text, quarantine, remove_orphan_temporaries

log = logging.getLogger(__name__)

HardNegatives = dict[str, list[str]]
"""query id -> negative doc ids, best BM25 rank first."""

_FORMAT_VERSION = 1


def _check_params(depth: int, skip: int) -> None:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if not 0 <= skip < depth:
        raise ValueError(f"skip must be in [0, depth={depth}), got {skip}")


def mine_hard_negatives(collection: Collection, depth: int = 100, skip: int = 0, k1: float = 0.9,
                        b: float = 0.4) -> HardNegatives:
    """Negatives for every judged query of `collection`'s split (see the module docstring)."""
    _check_params(depth, skip)
    queries = collection.eval_queries()
    retriever = BM25Retriever(k1=k1, b=b)
    retriever.index(collection.doc_ids, [d.contents for d in collection.documents])
    run = retriever.search(list(queries), list(queries.values()), k=depth)
    return negatives_from_run(collection, run, depth, skip, source="BM25")


def negatives_from_run(collection: Collection, run: Mapping[str, Mapping[str, float]],
                       depth: int = 100, skip: int = 0, source: str = "the run") -> HardNegatives:
    """Ranks `[skip, depth)` of any retriever's `run` for every judged query of `collection`,
    minus every judged document (the rule of the module docstring, for any first stage: AR2
    mines its retriever's own top documents)."""
    _check_params(depth, skip)
    queries = collection.eval_queries()
    missing = [qid for qid in queries if qid not in run]
    if missing:
        raise ValueError(f"the run has no results for {len(missing)} judged queries of "
                         f"{collection.name}/{collection.split} (e.g. {missing[:3]})")
    negatives: HardNegatives = {}
    removed = 0
    for qid in queries:
        judged = collection.qrels[qid]
        window = [doc_id for doc_id, _ in rank_documents(run[qid])[skip:depth]]
        negatives[qid] = [doc_id for doc_id in window if doc_id not in judged]
        removed += len(window) - len(negatives[qid])
    empty = [qid for qid, docs in negatives.items() if not docs]
    log.info("mined %d negatives from %s for %d queries of %s/%s (depth=%d, skip=%d); removed %d judged "
             "documents; %d queries got none (e.g. %s)", sum(map(len, negatives.values())),
             source, len(negatives), collection.name, collection.split, depth, skip, removed, len(empty),
             empty[:5])
    return negatives


def cache_key(collection: Collection, depth: int = 100, skip: int = 0, k1: float = 0.9,
              b: float = 0.4) -> str:
    """Hex digest of everything the mined negatives depend on."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": _FORMAT_VERSION, "corpus": collection.fingerprint(),
                              "depth": depth, "skip": skip, "k1": k1, "b": b}).encode())
    for qid, text in collection.eval_queries().items():
        digest.update(json.dumps([qid, text, sorted(collection.qrels[qid].items())],
                                 ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def format_hard_negatives(negatives: Mapping[str, Sequence[str]]) -> str:
    """The JSONL text, queries in the mapping's order."""
    return "".join(json.dumps({"qid": qid, "negatives": list(docs)}, ensure_ascii=False) + "\n"
                   for qid, docs in negatives.items())


def save_hard_negatives(negatives: Mapping[str, Sequence[str]], path: str | os.PathLike) -> Path:
    """Writes atomically, so an interrupted run never leaves a truncated cache that looks valid."""
    return atomic_write_text(path, format_hard_negatives(negatives))


def _fail(path: Path, line: int, message: str) -> InputFileError:
    return InputFileError(f"{path}:{line}: {message}")


def load_hard_negatives(path: str | os.PathLike, collection: Collection) -> HardNegatives:
    """Reads a JSONL file and checks it against `collection` (its corpus and its split's qrels).

    Every query must be judged in the split and every negative must be a corpus document that is
    not judged for that query; a violation raises with file:line, because negatives mined for
    another split or corpus would silently teach the model that relevant documents are not.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise InputFileError(f"{path}: not valid UTF-8 ({e})") from None
    if lines and lines[-1] == "":
        lines.pop()
    known_docs = set(collection.doc_ids)
    negatives: HardNegatives = {}
    first_line: dict[str, int] = {}
    blank = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            blank += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(path, number, f"malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict) or set(obj) != {"qid", "negatives"}:
            raise _fail(path, number, 'expected an object with exactly the keys "qid" and '
                        f'"negatives", got {line[:80]!r}')
        qid, docs = obj["qid"], obj["negatives"]
        if not isinstance(qid, str):
            raise _fail(path, number, f'"qid" must be a string, got {qid!r}')
        if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
            raise _fail(path, number, f'"negatives" of query {qid!r} must be a list of strings')
        if qid in first_line:
            raise _fail(path, number, f"query {qid!r} repeated (first on line {first_line[qid]})")
        if qid not in collection.qrels:
            raise _fail(path, number, f"query {qid!r} is not judged in split {collection.split!r} "
                        f"of {collection.path}; were these negatives mined for another split?")
        judged = collection.qrels[qid]
        if len(set(docs)) != len(docs):
            raise _fail(path, number, f"query {qid!r} lists a negative more than once")
        for doc_id in docs:
            if doc_id not in known_docs:
                raise _fail(path, number, f"negative {doc_id!r} of query {qid!r} is not in "
                            f"{collection.path}/corpus.jsonl")
            if doc_id in judged:
                raise _fail(path, number, f"negative {doc_id!r} is judged (grade {judged[doc_id]}) "
                            f"for query {qid!r}; judged documents must not be negatives")
        first_line[qid] = number
        negatives[qid] = docs
    missing = [qid for qid in collection.qrels if qid not in negatives]
    if blank or missing:
        log.warning("%s: %d blank lines skipped; %d judged queries have no line (e.g. %s)",
                    path, blank, len(missing), missing[:5])
    return negatives


def cached_hard_negatives(collection: Collection, cache_dir: str | os.PathLike, depth: int = 100,
                          skip: int = 0, k1: float = 0.9, b: float = 0.4) -> HardNegatives:
    """Loads the cached negatives for these inputs and parameters, mining and saving them if absent.

    The cache repairs itself: a file that fails to load (damaged, truncated, edited) is moved aside
    as `<name>.corrupt-<time>` with a warning naming it and the problem, and mined again; mining
    is deterministic, so nothing is lost. Temporary files of killed writers are deleted.
    """
    _check_params(depth, skip)
    key = cache_key(collection, depth, skip, k1, b)
    path = Path(cache_dir) / f"hard_negatives-{collection.name}-{collection.split}-{key[:16]}.jsonl"
    remove_orphan_temporaries(path.parent)
    if path.exists():
        log.info("loading cached hard negatives from %s", path)
        try:
            loaded = load_hard_negatives(path, collection)
            missing = [qid for qid in collection.eval_queries() if qid not in loaded]
            if missing:  # the miner writes a line for every judged query
                raise ValueError(f"{len(missing)} judged queries have no line (e.g. {missing[:3]})")
            return loaded
        except (OSError, ValueError) as e:
            moved = quarantine(path)
            log.warning("hard-negative cache %s is damaged (%s); moved it to %s and mining again",
                        path, e, moved.name)
    negatives = mine_hard_negatives(collection, depth, skip, k1, b)
    save_hard_negatives(negatives, path)
    return negatives
