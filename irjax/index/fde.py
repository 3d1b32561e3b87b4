"""MUVERA Fixed Dimensional Encodings (Dhulipala et al. 2024).

A multi-vector set (one embedding per token) is turned into one fixed-size vector so that a plain
inner product between a query FDE and a document FDE approximates the Chamfer similarity
CH(Q, D) = sum_q max_d <q, d>. That lets single-vector indexes (exact, FAISS, ScaNN) serve as the
candidate generator for late-interaction models, with exact MaxSim used only to rerank.

Per repetition, SimHash with `num_simhash_projections` Gaussian hyperplanes splits space into
2^k partitions. The query block of a partition is the SUM of the (optionally projected) query
tokens falling in it; the document block is their AVERAGE, so <q-block, d-block> is q's similarity
to the "typical" document token in q's region, a proxy for its nearest one. Empty document
partitions borrow the document token whose SimHash code is nearest in Hamming distance, so a query
token never lands in a zero block just because the document is short. Partition index == the
SimHash bit code, so Hamming distance between a partition and a token is popcount(b XOR code).

Both sides are scaled by 1/sqrt(num_repetitions), so the FDE inner product estimates CH(Q, D)
directly instead of num_repetitions * CH(Q, D) as in the paper; rankings are identical.

Query and document must be encoded with the same config (same seed): the random hyperplanes and
projections are a pure function of it, cached per config.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class FDEConfig:
    """Shape and randomness of an FDE; equal configs give identical encodings."""

    dim: int
    num_repetitions: int = 10
    num_simhash_projections: int = 4
    projection_dim: int | None = None
    final_dim: int | None = None
    fill_empty_partitions: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.num_repetitions <= 0:
            raise ValueError("dim and num_repetitions must be positive")
        if not 0 <= self.num_simhash_projections <= 20:
            raise ValueError("num_simhash_projections must be in [0, 20] (2^k partitions)")
        if self.projection_dim is not None and self.projection_dim <= 0:
            raise ValueError("projection_dim must be positive or None")
        if self.final_dim is not None and self.final_dim <= 0:
            raise ValueError("final_dim must be positive or None")

    @property
    def num_partitions(self) -> int:
        return 1 << self.num_simhash_projections

    @property
    def block_dim(self) -> int:
        return self.projection_dim if self.projection_dim is not None else self.dim

    @property
    def intermediate_dim(self) -> int:
        """Length before the optional final projection: R * 2^k * d_proj."""
        return self.num_repetitions * self.num_partitions * self.block_dim

    @property
    def output_dim(self) -> int:
        return self.final_dim if self.final_dim is not None else self.intermediate_dim


@dataclasses.dataclass(frozen=True)
class _Params:
    hyperplanes: np.ndarray  # [R, dim, k] Gaussian
    projections: np.ndarray | None  # [R, dim, d_proj], entries +-1/sqrt(d_proj)
    final: np.ndarray | None  # [intermediate_dim, final_dim], entries +-1/sqrt(final_dim)


@functools.lru_cache(maxsize=32)
def _params(config: FDEConfig) -> _Params:
    """All randomness of an encoding; seeded only by the config so query/doc sides agree."""
    rng = np.random.default_rng(config.seed)
    r, d, k = config.num_repetitions, config.dim, config.num_simhash_projections
    hyperplanes = rng.standard_normal((r, d, k))
    projections = None
    if config.projection_dim is not None:
        p = config.projection_dim
        # E[S S^T] = I, so projected inner products are unbiased estimates of the originals.
        projections = rng.choice([-1.0, 1.0], size=(r, d, p)) / np.sqrt(p)
    final = None
    if config.final_dim is not None:
        f = config.final_dim
        final = rng.choice([-1.0, 1.0], size=(config.intermediate_dim, f)) / np.sqrt(f)
    return _Params(hyperplanes, projections, final)


def _check_tokens(tokens: np.ndarray, config: FDEConfig) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.ndim != 2 or tokens.shape[1] != config.dim:
        raise ValueError(f"expected tokens [n, {config.dim}], got {tokens.shape}")
    return tokens


def _simhash_bits(tokens: np.ndarray, params: _Params) -> np.ndarray:
    """Sign bits [R, n, k] of every token against every repetition's hyperplanes."""
    return np.einsum("nd,rdk->rnk", tokens, params.hyperplanes) > 0


def _codes(bits: np.ndarray) -> np.ndarray:
    """Partition index [R, n] = the bit code read as an integer (bit j has weight 2^j)."""
    weights = 1 << np.arange(bits.shape[-1], dtype=np.int64)
    return (bits.astype(np.int64) * weights).sum(-1)


def _project(tokens: np.ndarray, params: _Params, config: FDEConfig) -> np.ndarray:
    """Per-repetition projected tokens [R, n, d_proj] (the identity when projection is off)."""
    if params.projections is None:
        return np.broadcast_to(tokens, (config.num_repetitions,) + tokens.shape)
    return np.einsum("nd,rdp->rnp", tokens, params.projections)


def _encode(tokens: np.ndarray, config: FDEConfig, is_query: bool) -> np.ndarray:
    tokens = _check_tokens(tokens, config)
    params = _params(config)
    r, b = config.num_repetitions, config.num_partitions
    n = tokens.shape[0]
    if n == 0:
        return np.zeros(config.output_dim)
    bits = _simhash_bits(tokens, params)  # [R, n, k]
    codes = _codes(bits)  # [R, n]
    projected = _project(tokens, params, config)  # [R, n, p]
    # One-hot membership [R, n, B]; block sums are then a single batched matmul.
    onehot = (codes[:, :, None] == np.arange(b)[None, None, :]).astype(np.float64)
    blocks = np.einsum("rnb,rnp->rbp", onehot, projected)
    if not is_query:
        counts = onehot.sum(1)  # [R, B]
        blocks = blocks / np.maximum(counts, 1.0)[:, :, None]
        if config.fill_empty_partitions:
            empty = counts == 0  # [R, B]
            if empty.any():
                # Hamming distance [R, B, n] between partition b's code and each token's code.
                k = config.num_simhash_projections
                part_bits = ((np.arange(b)[:, None] >> np.arange(k)[None, :]) & 1).astype(bool)
                hamming = (part_bits[None, :, None, :] != bits[:, None, :, :]).sum(-1)
                nearest = hamming.argmin(-1)  # [R, B]; ties take the first token
                fill = np.take_along_axis(projected, nearest[:, :, None], axis=1)  # [R, B, p]
                blocks = np.where(empty[:, :, None], fill, blocks)
    # 1/sqrt(R) on each side makes <FDE(Q), FDE(D)> an average over repetitions (the paper's sum
    # divided by R), so it estimates CH(Q, D) itself rather than R * CH; rankings are unchanged.
    flat = blocks.reshape(-1) / np.sqrt(r)
    if params.final is not None:
        flat = flat @ params.final
    return flat


def encode_query_fde(tokens: np.ndarray, config: FDEConfig) -> np.ndarray:
    """Query FDE [output_dim]: per-partition SUM, so every query token contributes once."""
    return _encode(tokens, config, is_query=True)


def encode_document_fde(tokens: np.ndarray, config: FDEConfig) -> np.ndarray:
    """Document FDE [output_dim]: per-partition AVERAGE, empty partitions filled if configured."""
    return _encode(tokens, config, is_query=False)


def encode_query_fdes(token_sets: Sequence[np.ndarray], config: FDEConfig) -> np.ndarray:
    """Stack of query FDEs [num_queries, output_dim] for variable-length token sets."""
    return _stack([encode_query_fde(t, config) for t in token_sets], config)


def encode_document_fdes(token_sets: Sequence[np.ndarray], config: FDEConfig) -> np.ndarray:
    """Stack of document FDEs [num_docs, output_dim] for variable-length token sets."""
    return _stack([encode_document_fde(t, config) for t in token_sets], config)


def _stack(rows: list[np.ndarray], config: FDEConfig) -> np.ndarray:
    if not rows:
        return np.zeros((0, config.output_dim))
    return np.stack(rows)


def chamfer_similarity(query_tokens: np.ndarray, doc_tokens: np.ndarray) -> float:
    """CH(Q, D) = sum over query tokens of the best document-token inner product."""
    q = np.asarray(query_tokens, dtype=np.float64)
    d = np.asarray(doc_tokens, dtype=np.float64)
    if q.shape[0] == 0:
        return 0.0
    if d.shape[0] == 0:
        raise ValueError("Chamfer similarity is undefined for an empty document")
    return float((q @ d.T).max(axis=1).sum())
