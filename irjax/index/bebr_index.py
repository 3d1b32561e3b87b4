"""A binary index of recurrent binarisation codes (BEBR, Gan et al. 2023), searched on the bits.

The binariser (trained by irjax/models/bebr.py) runs R rounds; round r maps the residual that the
previous rounds' reconstruction left to u sign bits and decodes them back:

    h_r = res_r @ enc_w[r] + enc_b[r];  b_r = sign(h_r) in {-1, +1}   (bit = h_r > 0)
    rec_{r+1} = rec_r + b_r @ dec_w[r] + dec_b[r];  res_{r+1} = x - rec_{r+1}

A document is R * u / 8 bytes. Search is symmetric: queries go through the same binariser and the
score is sum_r w_r * (1 - 2 * hamming_r / u), the round-weighted fraction of agreeing bits the
model trained with, computed with compressed.py's popcount Hamming distances. With `rerank=N` the
N best by bits are rescored with the float32 vectors (stored beside the codes, read only for the
candidates); N >= the corpus size makes the search exact.

The binariser's forward pass is written here in numpy (the index is self-contained: it encodes
queries at search time and loads without JAX); tests check it against the JAX model's bits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from irjax.index.base import Index, IndexIntegrityError, register_index
from irjax.index.compressed import hamming_distances, top_k_with_rerank

BITS_NAME, BINARIZER_NAME, VECTORS_NAME = "bits.npy", "binarizer.npz", "vectors.npy"
BINARIZER_KEYS = ("enc_w", "enc_b", "dec_w", "dec_b", "round_weights")


def check_binarizer(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float32 copies of the binariser's arrays after checking their names and shapes."""
    missing = [key for key in BINARIZER_KEYS if key not in weights]
    if missing:
        raise ValueError(f"binariser weights lack {missing}; expected {list(BINARIZER_KEYS)}")
    out = {key: np.asarray(weights[key], dtype=np.float32) for key in BINARIZER_KEYS}
    if out["enc_w"].ndim != 3:
        raise ValueError(f"enc_w must be [rounds, dim, bits], got {out['enc_w'].shape}")
    rounds, dim, bits = out["enc_w"].shape
    expected = {"enc_b": (rounds, bits), "dec_w": (rounds, bits, dim), "dec_b": (rounds, dim),
                "round_weights": (rounds,)}
    for key, shape in expected.items():
        if out[key].shape != shape:
            raise ValueError(f"binariser {key} has shape {out[key].shape}, expected {shape}")
    if bits % 8:
        raise ValueError(f"bits per round ({bits}) must be a multiple of 8 to pack into bytes")
    if not all(np.isfinite(v).all() for v in out.values()):
        raise ValueError("binariser weights hold NaN or infinite values; the training diverged")
    return out


def binarize(vectors: np.ndarray, weights: Mapping[str, np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray]:
    """(packed bits [n, R * u / 8] uint8, reconstructions [n, d]) of the recurrent binariser."""
    x = np.asarray(vectors, dtype=np.float32)
    reconstruction = np.zeros_like(x)
    packed = []
    for r in range(len(weights["enc_w"])):
        h = (x - reconstruction) @ weights["enc_w"][r] + weights["enc_b"][r]
        signs = np.where(h > 0, 1.0, -1.0).astype(np.float32)
        reconstruction = reconstruction + signs @ weights["dec_w"][r] + weights["dec_b"][r]
        packed.append(np.packbits(h > 0, axis=1))
    return np.concatenate(packed, axis=1), reconstruction


def round_scores(query_bits: np.ndarray, doc_bits: np.ndarray, round_weights: np.ndarray
                 ) -> np.ndarray:
    """[q, n] sum over rounds of w_r * (1 - 2 * hamming_r / u) on packed bits."""
    rounds = len(round_weights)
    width = doc_bits.shape[1] // rounds
    scores = np.zeros((len(query_bits), len(doc_bits)), np.float32)
    for r in range(rounds):
        part = slice(r * width, (r + 1) * width)
        ham = hamming_distances(query_bits[:, part], doc_bits[:, part]).astype(np.float32)
        scores += round_weights[r] * (1.0 - 2.0 * ham / (8 * width))
    return scores


@register_index
class BEBRIndex(Index):
    """Recurrent binary codes with round-weighted Hamming search (module docstring)."""

    kind = "bebr"
    required_files = (BITS_NAME, BINARIZER_NAME)

    def __init__(self, metric: str = "dot", rerank: int | None = None,
                 binarizer: Mapping[str, np.ndarray] | None = None) -> None:
        super().__init__(metric)
        if rerank is not None and (isinstance(rerank, bool) or not isinstance(rerank, int)
                                   or rerank < 1):
            raise ValueError(f"rerank must be a positive integer or None, got {rerank!r}")
        self.rerank = rerank
        self.binarizer = None if binarizer is None else check_binarizer(binarizer)
        self._bits: np.ndarray | None = None
        self._vectors: np.ndarray | None = None

    def options(self) -> dict[str, Any]:
        return {"rerank": self.rerank}  # the binariser is data (binarizer.npz), not an option

    @property
    def bytes_per_doc(self) -> int:
        """Bytes of bits search scans per document."""
        assert self._bits is not None
        return int(self._bits.shape[1])

    def build_params(self) -> dict[str, Any]:
        return {"bytes_per_doc": self.bytes_per_doc,
                "rerank_bytes_per_doc": 0 if self._vectors is None else 4 * self._vectors.shape[1]}

    def _require_binarizer(self) -> dict[str, np.ndarray]:
        if self.binarizer is None:
            raise ValueError("a bebr index needs the trained binariser: "
                             "BEBRIndex(binarizer=BEBRModel.export(params))")
        return self.binarizer

    def _build(self, vectors: np.ndarray) -> None:
        weights = self._require_binarizer()
        if vectors.shape[1] != weights["enc_w"].shape[1]:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, the binariser "
                             f"{weights['enc_w'].shape[1]}; use the encoder it was trained on")
        self._bits, _ = binarize(vectors, weights)
        self._vectors = vectors if self.rerank is not None else None

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        weights = self._require_binarizer()
        assert self._bits is not None
        query_bits, _ = binarize(queries, weights)
        scores = round_scores(query_bits, self._bits, weights["round_weights"])
        return top_k_with_rerank(scores, queries, self._vectors, self.rerank, k)

    def _save_data(self, directory: Path) -> None:
        assert self._bits is not None
        np.save(directory / BITS_NAME, self._bits)
        np.savez(directory / BINARIZER_NAME, **self._require_binarizer())
        if self._vectors is not None:
            np.save(directory / VECTORS_NAME, self._vectors)

    def _load_data(self, directory: Path, manifest: dict[str, Any]) -> tuple[int, int]:
        if self.rerank is not None and VECTORS_NAME not in manifest["files"]:
            raise IndexIntegrityError(f"{directory} lacks {VECTORS_NAME} for rerank={self.rerank}; "
                                      "rebuild the index")
        with np.load(directory / BINARIZER_NAME, allow_pickle=False) as data:
            try:
                self.binarizer = check_binarizer({key: data[key] for key in data.files})
            except ValueError as e:
                raise IndexIntegrityError(f"{directory}/{BINARIZER_NAME}: {e}; rebuild it") from e
        self._bits = np.load(directory / BITS_NAME, allow_pickle=False)
        rounds, dim, bits = self.binarizer["enc_w"].shape
        if self._bits.dtype != np.uint8 or self._bits.shape[1] != rounds * bits // 8:
            raise IndexIntegrityError(f"{directory}/{BITS_NAME} holds {self._bits.dtype} "
                                      f"{self._bits.shape}, not uint8 [n, {rounds * bits // 8}]; "
                                      "rebuild the index")
        if self.rerank is not None:
            self._vectors = np.load(directory / VECTORS_NAME, allow_pickle=False)
        return len(self._bits), dim
