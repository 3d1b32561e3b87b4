"""The one Retriever contract: a collection and queries in, a ranked run out, with timings.

`evaluate_on_collection` treats every family alike through it (BM25, dense, multi-vector,
generative), so a new model family only has to supply `retrieve`. `timings` holds seconds per
stage (corpus encoding, index build, query encoding, search or decoding) of the last call; they
land in metrics.json. A retriever that owns a compressed or reduced index may also offer
`index_stats() -> dict` (bytes_per_doc, vectors or postings per document), merged into metrics.json.
"""
from __future__ import annotations

from typing import Protocol

from irjax.data.collection import Collection
from irjax.data.runs import Run


class Retriever(Protocol):
    name: str
    timings: dict[str, float]

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run: ...
