"""A bi-encoder as a `PairScorer`: the cosine of the two texts' embeddings.

Its pair scores form a matrix of rank at most the embedding width with a known exact k-NN (a
dense index), which makes it the stand-in for a cross-encoder when checking methods built on
pair scores (ANNCUR) against exact search. Each distinct text is embedded once and remembered,
because a pair scorer sees the same documents again for every query.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class EncoderPairScorer:
    """score_pairs(queries, documents) = <e(query), e(document)> with a TextEncoder's unit vectors."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.name = f"{encoder.name}-cosine"
        self.fingerprint = f"cosine:{encoder.fingerprint}"
        self.costs: dict[str, float] = {}
        self._vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dim] unit vectors, encoding only texts not seen before."""
        new = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if new:
            for text, vector in zip(new, self.encoder.encode(new)):
                self._vectors[text] = vector
        self.costs = {"encoded_texts": float(len(new))}
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, 0))

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        if len(queries) != len(documents):
            raise ValueError(f"score_pairs got {len(queries)} queries and {len(documents)} "
                             "documents; it scores pairs, so the lists must be equally long")
        if not queries:
            return np.zeros(0, np.float64)
        q = self.embed(list(queries))
        encoded = self.costs["encoded_texts"]
        d = self.embed(list(documents))
        self.costs = {"encoded_texts": encoded + self.costs["encoded_texts"]}
        return np.einsum("ij,ij->i", q.astype(np.float64), d.astype(np.float64))
