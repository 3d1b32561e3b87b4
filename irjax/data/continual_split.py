"""Continual indexing (DSI++) splits a corpus into documents indexed first (D0, "old") and a
batch added later (D1, "new"), and every other input must follow that split: training judgments
of a phase may only name that phase's documents, and forgetting is measured on queries that only
old documents answer.

    split = split_documents(collection.doc_ids, new_fraction=0.1, seed=0)
    phase1 = judgments_within(train, split.old)        # retrieval examples of D0 only
    old_queries = queries_answered_by(test, split.old)  # eval queries whose relevant docs are in D0

The split is a seeded random draw, kept in corpus order on both sides, so it is reproducible and
independent of how the corpus file happens to be sorted (e.g. by date or topic).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irjax.data.collection import Collection
from irjax.files import atomic_write_text


@dataclasses.dataclass(frozen=True)
class DocumentSplit:
    """The old (D0) and new (D1) document ids, each in corpus order."""

    old: tuple[str, ...]
    new: tuple[str, ...]
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "num_old": len(self.old), "num_new": len(self.new),
                "old": list(self.old), "new": list(self.new)}

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DocumentSplit":
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(tuple(payload["old"]), tuple(payload["new"]), int(payload["seed"]))


def new_document_count(num_documents: int, new_fraction: float | None,
                       new_doc_count: int | None) -> int:
    """How many documents D1 holds: `new_doc_count` if given, else round(fraction * corpus)."""
    if new_doc_count is not None:
        count = int(new_doc_count)
    elif new_fraction is not None:
        if not 0 < new_fraction < 1:
            raise ValueError(f"new_fraction={new_fraction} must lie strictly between 0 and 1")
        count = int(math.floor(new_fraction * num_documents + 0.5))
    else:
        raise ValueError("give new_fraction (share of the corpus added later) or new_doc_count")
    if not 1 <= count <= num_documents - 1:
        raise ValueError(f"the new batch would hold {count} of {num_documents} documents; both "
                         "the old and the new part need at least one document")
    return count


def split_documents(doc_ids: Sequence[str], *, new_fraction: float | None = 0.1,
                    new_doc_count: int | None = None, seed: int = 0) -> DocumentSplit:
    """A seeded random draw of the new documents; the rest are old. Pure function of its inputs."""
    doc_ids = list(doc_ids)
    count = new_document_count(len(doc_ids), new_fraction, new_doc_count)
    chosen = set(np.random.default_rng(seed).permutation(len(doc_ids))[:count].tolist())
    old = tuple(d for i, d in enumerate(doc_ids) if i not in chosen)
    new = tuple(d for i, d in enumerate(doc_ids) if i in chosen)
    return DocumentSplit(old, new, seed)


def judgments_within(collection: Collection, doc_ids: Iterable[str]) -> Collection:
    """The collection with only the judgments that name `doc_ids` (queries left without any
    judgment drop out), so training on it never sees a docid of another phase."""
    keep = set(doc_ids)
    qrels = {}
    for qid, docs in collection.qrels.items():
        within = {d: g for d, g in docs.items() if d in keep}
        if within:
            qrels[qid] = within
    return dataclasses.replace(collection, qrels=qrels)


def queries_answered_by(collection: Collection, doc_ids: Iterable[str]) -> Collection:
    """The collection with only the queries that have a relevant document (grade > 0) and whose
    relevant documents all lie in `doc_ids`; their judgments are kept whole."""
    keep = set(doc_ids)
    qrels = {}
    for qid, docs in collection.qrels.items():
        relevant = [d for d, g in docs.items() if g > 0]
        if relevant and all(d in keep for d in relevant):
            qrels[qid] = dict(docs)
    return dataclasses.replace(collection, qrels=qrels)
