"""Training pairs (query, relevant document) from the judgments of a training split.

A dual encoder learns from positives only; negatives are added later by the input pipeline. Every
judgment with grade >= `min_grade` becomes one `TrainingPair`, in a fixed order (queries in
queries.jsonl order, documents in qrels order) so that a seed alone determines what training sees.
Judgments that do not become pairs are counted by reason, never dropped silently:

* grade <= 0: judged non-relevant (or negative), never a positive;
* 0 < grade < min_grade: relevant but below the requested grade;
* the document has neither title nor text: an encoder would only see [CLS] [SEP], which teaches
  nothing about the query and would make every such "positive" identical.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from irjax.data.collection import Collection

log = logging.getLogger(__name__)

_REASONS = {
    "non_positive_judgments_skipped": "judgments with grade <= 0 skipped (not positives)",
    "below_min_grade_skipped": "judgments with 0 < grade < min_grade skipped",
    "empty_positive_documents_skipped": "relevant documents with no title and no text skipped",
    "queries_without_pairs": "judged queries yield no training pair",
}


@dataclass(frozen=True)
class TrainingPair:
    """One positive training example; `pos_text` is the document's title + text contents."""

    qid: str
    query: str
    pos_id: str
    pos_text: str


class TrainingPairs(Sequence[TrainingPair]):
    """An immutable list of pairs plus the counts of judgments that did not become pairs."""

    def __init__(self, pairs: Sequence[TrainingPair], counts: dict[str, int], min_grade: int):
        self._pairs = tuple(pairs)
        self.counts = dict(counts)
        self.min_grade = min_grade

    @overload
    def __getitem__(self, index: int) -> TrainingPair: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[TrainingPair]: ...

    def __getitem__(self, index):
        return self._pairs[index]

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[TrainingPair]:
        return iter(self._pairs)

    @property
    def query_ids(self) -> list[str]:
        """Distinct query ids in pair order."""
        return list(dict.fromkeys(p.qid for p in self._pairs))

    def summary(self) -> str:
        """One line of totals, then one line per non-zero skip reason."""
        lines = [f"{len(self._pairs)} training pairs from {len(self.query_ids)} queries "
                 f"(min_grade={self.min_grade})"]
        lines += [f"{n} {_REASONS[k]}" for k, n in self.counts.items() if n]
        return "\n".join(lines)


def build_training_pairs(collection: Collection, min_grade: int = 1) -> TrainingPairs:
    """One pair per judgment with grade >= `min_grade` of `collection`'s split.

    Raises when no pair results, since training on nothing would only fail later and less clearly.
    """
    if isinstance(min_grade, bool) or not isinstance(min_grade, int) or min_grade < 1:
        raise ValueError(f"min_grade must be an integer >= 1 (grades <= 0 mean non-relevant), "
                         f"got {min_grade!r}")
    contents = {d.doc_id: d.contents for d in collection.documents}
    counts = dict.fromkeys(_REASONS, 0)
    pairs: list[TrainingPair] = []
    for qid, query in collection.eval_queries().items():
        before = len(pairs)
        for doc_id, grade in collection.qrels[qid].items():
            if grade <= 0:
                counts["non_positive_judgments_skipped"] += 1
            elif grade < min_grade:
                counts["below_min_grade_skipped"] += 1
            elif not contents[doc_id].strip():
                counts["empty_positive_documents_skipped"] += 1
            else:
                pairs.append(TrainingPair(qid, query, doc_id, contents[doc_id]))
        counts["queries_without_pairs"] += len(pairs) == before
    result = TrainingPairs(pairs, counts, min_grade)
    if not pairs:
        raise ValueError(f"{collection.path}: split {collection.split!r} has no judgment with grade "
                         f">= {min_grade} on a non-empty document; nothing to train on "
                         f"({result.summary()})")
    log.info("%s/%s: %s", collection.name, collection.split, result.summary().replace("\n", "; "))
    return result


def relevant_documents(pairs: Sequence[TrainingPair]) -> dict[str, set[str]]:
    """query id -> its positive doc ids, for masking in-batch negatives that are really positives."""
    relevant: dict[str, set[str]] = {}
    for pair in pairs:
        relevant.setdefault(pair.qid, set()).add(pair.pos_id)
    return relevant
