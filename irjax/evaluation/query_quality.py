"""Cheap signals of whether generated queries are about their documents, for a person (or a
summary file) to judge a query generator without training DSI on its output first.

* overlap: the fraction of queries sharing at least one content word (not a stopword) with
  their document. A generator that ignores its input scores low; one that only copies scores 1.0.
* copy rate: the mean share of a query's content words that appear in its document.
* unique: the fraction of a document's queries that are distinct (sampling diversity).

Words are lowercase ASCII letter/digit runs; the stopword list is a short English one (function
words and question words, which generated and real queries share regardless of content).
Comparing with the same numbers for the real training queries gives the scale.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_WORD = re.compile(r"[a-z0-9]+")

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself just
me more most my myself no nor not now of off on once only or other our ours ourselves out over
own same she should so some such than that the their theirs them themselves then there these
they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves also may might must shall via vs
versus s t""".split())


def content_words(text: str) -> set[str]:
    """Lowercased words of `text` that are not stopwords."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def query_quality(documents: Mapping[str, str],
                  queries: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """overlap_fraction, copy_rate, unique_fraction and mean_query_words over every (document,
    query) pair of `queries` (doc id -> queries); every doc id must be in `documents`."""
    missing = [d for d in queries if d not in documents]
    if missing:
        raise KeyError(f"queries name {len(missing)} documents that are not given, "
                       f"e.g. {missing[:5]}")
    total = overlapping = 0
    copy_sum = words_sum = 0.0
    unique = 0
    for doc_id, doc_queries in queries.items():
        doc_words = content_words(documents[doc_id])
        unique += len(set(doc_queries))
        for query in doc_queries:
            words = content_words(query)
            total += 1
            words_sum += len(words)
            shared = len(words & doc_words)
            overlapping += shared > 0
            copy_sum += shared / len(words) if words else 0.0
    if total == 0:
        return {"num_queries": 0}
    return {"num_queries": total, "overlap_fraction": overlapping / total,
            "copy_rate": copy_sum / total, "unique_fraction": unique / total,
            "mean_content_words": words_sum / total}
