"""Pseudo queries taken from the corpus itself: text of a document that stands in for a query.

Generative retrieval learns queries -> docids from few labelled queries (SciFact: 809 train
queries, judging at most ~17% of the 5,183 documents), so most documents are only ever seen as
their own text. Pieces of that text make cheap, always-on-topic queries (no generator to train):

    spans      `count` random spans of `length` consecutive words per document (NCI's "document
               as query", Pradeep et al. 2023's random 64-token spans; Contriever's random
               cropping): different starting points show the model different parts of a document
    sentences  every sentence of the document (or a random `count` of them), split on
               ., ! and ? followed by white space and an upper-case letter or digit (ISS-style)
    start      the document's first `length` words (DSI's indexing input, as a query)
    title      the document's title, where it has one

`corpus_queries(documents, source, ...)` is the one interface: doc id -> list of strings, the
same shape as generated pseudo queries, so every source mixes with labelled and generated queries
through DSIMixture weights (dsi_examples.corpus_query_examples). Everything is a pure function of
(seed, doc id, text): each document's random generator is seeded from the seed and a hash of its
id, so its spans do not depend on corpus order or on other documents. Every string returned is a
contiguous run of the document's whitespace-separated words (or its title), re-joined with single
spaces: a pseudo query never leaves its document.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

from irjax.data.collection import Collection, Document

SOURCES = ("spans", "sentences", "start", "title")
# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) when white space
# and an upper-case letter or a digit follow; abbreviations like "e.g. the" do not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9])")


def document_rng(seed: int, doc_id: str) -> np.random.Generator:
    """The generator of one document: seeded from (seed, a stable hash of its id)."""
    digest = int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest])


def random_spans(text: str, count: int, length: int, rng: np.random.Generator) -> list[str]:
    """Up to `count` spans of `length` consecutive words at distinct random starting words.

    A text of at most `length` words has one span, itself; a longer one has n - length + 1
    possible starts, of which min(count, that many) are drawn without replacement, in order of
    their start."""
    if count < 1 or length < 1:
        raise ValueError(f"need count >= 1 and length >= 1 words, got {count} and {length}")
    words = text.split()
    if not words:
        return []
    starts = len(words) - length + 1
    if starts <= 1:
        return [" ".join(words)]
    chosen = np.sort(rng.choice(starts, size=min(count, starts), replace=False))
    return [" ".join(words[s:s + length]) for s in chosen.tolist()]


def split_sentences(text: str, min_words: int = 1) -> list[str]:
    """The sentences of `text` in order, white space collapsed; shorter than `min_words` dropped."""
    out = []
    for piece in _SENTENCE_END.split(text.strip()):
        words = piece.split()
        if len(words) >= max(1, min_words):
            out.append(" ".join(words))
    return out


def sentences(text: str, rng: np.random.Generator, count: int | None = None,
              min_words: int = 4) -> list[str]:
    """Every sentence of at least `min_words` words, or `count` of them drawn at random (kept
    in document order)."""
    found = split_sentences(text, min_words)
    if count is None or count >= len(found):
        return found
    if count < 1:
        raise ValueError(f"count must be >= 1 or None (every sentence), got {count}")
    keep = np.sort(rng.choice(len(found), size=count, replace=False))
    return [found[i] for i in keep.tolist()]


def document_start(text: str, length: int) -> list[str]:
    """The first `length` words, as one query (none for an empty text)."""
    words = text.split()[:length]
    return [" ".join(words)] if words else []


def corpus_queries(documents: Collection | Iterable[Document], source: str, *, seed: int = 0,
                   count: int | None = None, length: int = 64,
                   min_words: int = 4) -> dict[str, list[str]]:
    """doc id -> pseudo queries of `source` (module docstring), documents in corpus order.

    `count`: spans per document (default 10) or sentences per document (default: all); `length`:
    words per span or of the start; `min_words`: the shortest sentence kept. Spans, sentences and
    the start are cut from the document's text (its title is the `title` source); documents
    without any get no entry."""
    if source not in SOURCES:
        raise ValueError(f"unknown pseudo-query source {source!r}; choose one of {SOURCES}")
    if length < 1:
        raise ValueError(f"length must be >= 1 words, got {length}")
    docs = documents.documents if isinstance(documents, Collection) else documents
    out: dict[str, list[str]] = {}
    for doc in docs:
        text = doc.text if doc.text.strip() else doc.title
        if source == "spans":
            found = random_spans(text, 10 if count is None else count, length,
                                 document_rng(seed, doc.doc_id))
        elif source == "sentences":
            found = sentences(text, document_rng(seed, doc.doc_id), count, min_words)
        elif source == "start":
            found = document_start(text, length)
        else:
            found = [" ".join(doc.title.split())] if doc.title.strip() else []
        if found:
            out[doc.doc_id] = found
    return out


def source_counts(queries: dict[str, Sequence[str]]) -> dict[str, float]:
    """Documents covered, queries in all and per covered document (for logs and summaries)."""
    total = sum(len(q) for q in queries.values())
    return {"documents": len(queries), "queries": total,
            "per_document": round(total / max(len(queries), 1), 3)}
