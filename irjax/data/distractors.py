"""Distractor passages from real text, for measuring retrieval as a corpus grows.

No collection of a million passages exists offline, so a scaling study adds distractors to a
real collection (its queries and judgments unchanged). Random tokens would be trivially easy to
reject; these are real sentences of *other* collections (document-disjoint from the one under
study), recombined into passages: each passage takes runs of consecutive sentences from two or
three source documents until it reaches a length drawn from a log-normal word-count
distribution (mean ~56 words, MS MARCO passage-like; clipped to [20, 150]). Everything is a pure
function of the seed, so passage i is the same whatever the total count, and the corpus of N
distractors is a prefix of the corpus of M > N.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from irjax.data.collection import Document

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_SENTENCE_WORDS = 4
ID_PREFIX = "distractor-"


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (split after . ! ? followed by whitespace), of at least 4 words."""
    out = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        if len(sentence.split()) >= MIN_SENTENCE_WORDS:
            out.append(sentence)
    return out


@dataclasses.dataclass(frozen=True)
class SentencePool:
    """Sentences grouped by source document: `sentences[starts[d]:starts[d+1]]` belong to
    document d, in their original order (so runs of them read as text)."""

    sentences: list[str]
    starts: np.ndarray  # int64 [num_documents + 1]
    sources: list[str]  # "collection/doc_id" of each document

    @classmethod
    def from_documents(cls, documents: Iterable[tuple[str, Document]]) -> "SentencePool":
        """From (collection name, document) pairs; documents without a usable sentence are
        skipped."""
        sentences: list[str] = []
        starts = [0]
        sources: list[str] = []
        for collection, document in documents:
            parts = split_sentences(document.text)
            if not parts:
                continue
            sentences += parts
            starts.append(len(sentences))
            sources.append(f"{collection}/{document.doc_id}")
        if not sources:
            raise ValueError("no source document has a sentence of 4+ words")
        return cls(sentences, np.asarray(starts, np.int64), sources)

    @property
    def num_documents(self) -> int:
        return len(self.sources)

    def distinct_sentences(self) -> int:
        return len(set(self.sentences))


def passage_length(rng: np.random.Generator, mean_words: float = 56.0, sigma: float = 0.45,
                   low: int = 20, high: int = 150) -> int:
    """A word count from a log-normal with the given mean, clipped to [low, high]."""
    mu = math.log(mean_words) - sigma ** 2 / 2
    return int(np.clip(round(rng.lognormal(mu, sigma)), low, high))


def make_passage(pool: SentencePool, index: int, seed: int) -> tuple[str, list[int]]:
    """Passage `index`: its text and the pool positions of the sentences it uses.

    Two or three source documents, a run of consecutive sentences from each (starting at a
    random sentence), until the drawn length is reached (always at least one sentence).
    """
    rng = np.random.default_rng([seed, index])
    target = passage_length(rng)
    parts: list[int] = []
    words = 0
    for _ in range(int(rng.integers(2, 4))):
        doc = int(rng.integers(pool.num_documents))
        start, stop = int(pool.starts[doc]), int(pool.starts[doc + 1])
        position = int(rng.integers(start, stop))
        run = int(rng.integers(1, 4))
        while position < stop and run > 0 and (words < target or not parts):
            parts.append(position)
            words += len(pool.sentences[position].split())
            position += 1
            run -= 1
        if words >= target:
            break
    return " ".join(pool.sentences[p] for p in parts), parts


def distractor_documents(pool: SentencePool, count: int, seed: int = 0,
                         start: int = 0) -> Iterator[Document]:
    """Documents `start` .. `start + count - 1` of the seeded stream (ids distractor-%08d)."""
    for i in range(start, start + count):
        text, _ = make_passage(pool, i, seed)
        yield Document(f"{ID_PREFIX}{i:08d}", "", text)


def used_sentences(pool: SentencePool, count: int, seed: int = 0) -> int:
    """How many distinct sentences the first `count` passages draw on."""
    seen: set[int] = set()
    for i in range(count):
        seen.update(make_passage(pool, i, seed)[1])
    return len({pool.sentences[p] for p in seen})


def write_corpus(path: Path, documents: Iterable[Document]) -> int:
    """Appends documents as BEIR JSONL lines to an open-for-append file; returns the count."""
    n = 0
    with open(path, "a", encoding="utf-8") as f:
        for d in documents:
            f.write(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text},
                               ensure_ascii=False) + "\n")
            n += 1
    return n
