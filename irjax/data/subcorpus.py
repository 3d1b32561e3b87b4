"""A deterministic N-document subset of a BEIR collection, written in BEIR layout, so that every
job (BM25, dual encoder, DSI, ...) runs on it unchanged by pointing DATA_DIR at the folder.

Why a subset is more than "the first N documents": a query whose relevant documents were cut
away can never be answered, and a training pair whose document is gone silently disappears. So:

1. Every document judged relevant (grade > 0) for a query of the evaluation split or of the
   training split is kept, and every such query stays answerable with its full set of relevant
   documents.
2. The rest of the N slots are filled with other documents drawn at random (seeded). One seeded
   order is drawn for the fill, so the subsets of one collection are nested: the 1k subset is
   inside the 2k subset whenever both hold the whole judged set.
3. If N is smaller than the judged set, queries are sampled instead, in the same proportion
   from both splits (a seeded interleaved order; a query is kept when all its relevant documents
   still fit), and the report says so (`sampled_queries`, `note`).

Judgments that name a dropped document (judged non-relevant ones, grade <= 0) are removed from
the qrels and counted; queries left without judgments drop out of that split. The subset holds
only the evaluation and training splits (other splits' queries could be unanswerable). The
corpus and query lines are copied byte for byte from the source (extra fields such as
`metadata` survive); `subset.json` records the source, its sha256, the parameters and the
counts, and lets a later call with the same parameters reuse the folder instead of rewriting it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from irjax.data.collection import (QRELS_HEADER, CollectionError, available_splits, load_corpus,
                                   load_qrels, load_queries)
from irjax.files import atomic_directory, sha256_file

log = logging.getLogger(__name__)

SUBSET_FILE = "subset.json"
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Subcorpus:
    """Which documents, queries and judgments of `source` the subset keeps (all in source order)."""

    source: Path
    size: int
    seed: int
    eval_split: str
    train_split: str | None
    doc_ids: list[str]
    query_ids: list[str]
    qrels: dict[str, dict[str, dict[str, int]]]  # split -> query id -> doc id -> grade
    report: dict[str, Any]

    @property
    def splits(self) -> list[str]:
        return list(self.qrels)


def _splits(eval_split: str, train_split: str | None) -> list[str]:
    return [eval_split] + ([train_split] if train_split and train_split != eval_split else [])


def _relevant(qrels: dict[str, dict[str, int]]) -> dict[str, set[str]]:
    return {qid: {d for d, g in grades.items() if g > 0} for qid, grades in qrels.items()}


def _interleaved(query_ids: dict[str, list[str]], rng: np.random.Generator
                 ) -> Iterator[tuple[str, str]]:
    """(split, query id) in a seeded order that draws from every split in proportion to its size,
    so keeping any prefix keeps about the same fraction of each split."""
    keyed = []
    for rank, (split, ids) in enumerate(query_ids.items()):
        order = rng.permutation(len(ids))
        keyed += [((i + 0.5) / len(ids), rank, split, ids[j]) for i, j in enumerate(order)]
    for _, _, split, qid in sorted(keyed):
        yield split, qid


def select_subcorpus(source: str | os.PathLike, size: int, *, eval_split: str = "test",
                     train_split: str | None = "train", seed: int = 0) -> Subcorpus:
    """Chooses the `size` documents (and the queries and judgments that stay valid) of `source`."""
    root = Path(os.path.abspath(source))
    splits = _splits(eval_split, train_split)
    for split in splits:
        if not (root / "qrels" / f"{split}.tsv").is_file():
            raise CollectionError(f"{root / 'qrels' / f'{split}.tsv'}: split {split!r} not found; "
                                  f"available splits: {available_splits(root) or 'none'}")
    doc_ids = [d.doc_id for d in load_corpus(root / "corpus.jsonl")]
    known = set(doc_ids)
    if not 1 <= size <= len(doc_ids):
        raise ValueError(f"subset size {size} must lie in [1, {len(doc_ids)}] (the documents of "
                         f"{root.name})")
    qrels = {split: load_qrels(root / "qrels" / f"{split}.tsv") for split in splits}
    for split, judged in qrels.items():
        unknown = sorted({d for grades in judged.values() for d in grades} - known)
        if unknown:
            raise CollectionError(f"{root}/qrels/{split}.tsv names {len(unknown)} documents not "
                                  f"in corpus.jsonl, e.g. {unknown[:5]}")
    relevant = {split: _relevant(judged) for split, judged in qrels.items()}
    judged_docs = set().union(*(docs for r in relevant.values() for docs in r.values()))

    kept_queries: dict[str, list[str]] = {s: sorted(qrels[s]) for s in splits}
    sampled = len(judged_docs) > size
    if sampled:
        kept_docs: set[str] = set()
        chosen: dict[str, list[str]] = {s: [] for s in splits}
        for split, qid in _interleaved(kept_queries, np.random.default_rng([seed, 0])):
            need = relevant[split][qid] - kept_docs
            if len(kept_docs) + len(need) <= size:
                kept_docs |= need
                chosen[split].append(qid)
        kept_queries = chosen
    else:
        kept_docs = set(judged_docs)
    others = [d for d in doc_ids if d not in kept_docs]
    fill_order = np.random.default_rng([seed, 1]).permutation(len(others))
    fill = [others[i] for i in fill_order[:size - len(kept_docs)]]
    kept_docs |= set(fill)

    out_qrels: dict[str, dict[str, dict[str, int]]] = {}
    dropped_judgments = 0
    counts: dict[str, dict[str, int]] = {}
    for split in splits:
        out: dict[str, dict[str, int]] = {}
        keep = set(kept_queries[split])
        for qid in (q for q in qrels[split] if q in keep):  # qrels file order
            grades = {d: g for d, g in qrels[split][qid].items() if d in kept_docs}
            dropped_judgments += len(qrels[split][qid]) - len(grades)
            if grades:
                out[qid] = grades
        if not out:
            smallest = min(len(r) for r in relevant[split].values())
            raise ValueError(f"a subset of {size} documents keeps no query of split {split!r} of "
                             f"{root.name}: its smallest query needs {smallest} relevant "
                             "documents and the splits share the room; choose a larger size")
        out_qrels[split] = out
        counts[split] = {"queries_kept": len(out), "queries_total": len(qrels[split])}
    kept_qids = set().union(*(set(q) for q in out_qrels.values()))
    query_ids = [q for q in load_queries(root / "queries.jsonl") if q in kept_qids]

    note = ""
    if sampled:
        fractions = ", ".join(f"{c['queries_kept']}/{c['queries_total']} {s} queries"
                              for s, c in counts.items())
        note = (f"{size} documents cannot hold the {len(judged_docs)} documents judged relevant "
                f"in {' + '.join(splits)}; sampled queries instead: kept {fractions}")
        log.warning("%s: %s", root.name, note)
    report = {
        "num_documents": size, "source_documents": len(doc_ids),
        "judged_relevant_documents": len(judged_docs),
        "kept_judged_documents": size - len(fill), "fill_documents": len(fill),
        "sampled_queries": sampled, "splits": counts,
        "num_queries": len(query_ids), "dropped_judgments": dropped_judgments, "note": note,
    }
    return Subcorpus(root, size, seed, eval_split, train_split,
                     [d for d in doc_ids if d in kept_docs], query_ids, out_qrels, report)


def _copy_lines(source: Path, target: Path, keep: set[str]) -> int:
    """Copies the JSON lines of `source` whose `_id` is in `keep`, byte for byte."""
    written = 0
    with open(source, "rb") as f, open(target, "wb") as out:
        for line in f:
            if line.strip() and json.loads(line)["_id"] in keep:
                out.write(line if line.endswith(b"\n") else line + b"\n")
                written += 1
    return written


def _metadata(sub: Subcorpus, source_sha256: str) -> dict[str, Any]:
    return {"version": _FORMAT_VERSION, "source": str(sub.source), "source_name": sub.source.name,
            "source_corpus_sha256": source_sha256, "size": sub.size, "seed": sub.seed,
            "eval_split": sub.eval_split, "train_split": sub.train_split, **sub.report}


def write_subcorpus(sub: Subcorpus, out_dir: str | os.PathLike) -> Path:
    """Writes `sub` in BEIR layout to `out_dir`, atomically: a temporary sibling is renamed into
    place, so an interrupted write never leaves a folder that looks complete."""
    out_dir = Path(out_dir)
    source_sha256 = sha256_file(sub.source / "corpus.jsonl")
    with atomic_directory(out_dir) as tmp:
        (tmp / "qrels").mkdir()
        docs = _copy_lines(sub.source / "corpus.jsonl", tmp / "corpus.jsonl", set(sub.doc_ids))
        queries = _copy_lines(sub.source / "queries.jsonl", tmp / "queries.jsonl",
                              set(sub.query_ids))
        if (docs, queries) != (len(sub.doc_ids), len(sub.query_ids)):
            raise CollectionError(f"{sub.source} changed while the subset was written "
                                  f"({docs} documents, {queries} queries copied)")
        for split, judged in sub.qrels.items():
            lines = ["\t".join(QRELS_HEADER)] + [f"{q}\t{d}\t{g}" for q, grades in judged.items()
                                                  for d, g in grades.items()]
            (tmp / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / SUBSET_FILE).write_text(json.dumps(_metadata(sub, source_sha256), indent=2) + "\n")
    return out_dir


def read_subset_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The `subset.json` of a folder written by `write_subcorpus`, or None."""
    info = Path(path) / SUBSET_FILE
    return json.loads(info.read_text()) if info.is_file() else None


def make_subcorpus(source: str | os.PathLike, out_dir: str | os.PathLike, size: int, *,
                   eval_split: str = "test", train_split: str | None = "train",
                   seed: int = 0) -> dict[str, Any]:
    """`select_subcorpus` + `write_subcorpus`, reusing `out_dir` when it already holds the same
    subset (same source bytes, size, seed and splits). Returns the folder's subset.json."""
    source, out_dir = Path(os.path.abspath(source)), Path(out_dir)
    existing = read_subset_info(out_dir)
    if existing is not None:
        wanted = {"version": _FORMAT_VERSION, "source_corpus_sha256":
                  sha256_file(source / "corpus.jsonl"), "size": size, "seed": seed,
                  "eval_split": eval_split, "train_split": train_split}
        if all(existing.get(k) == v for k, v in wanted.items()):
            return existing
        log.info("%s holds another subset; rebuilding it", out_dir)
    sub = select_subcorpus(source, size, eval_split=eval_split, train_split=train_split, seed=seed)
    write_subcorpus(sub, out_dir)
    return read_subset_info(out_dir)  # type: ignore[return-value]
