"""ANNCUR (Yadav et al. 2022): k-NN search under a cross-encoder without a dual encoder.

A cross-encoder scores a (query, document) pair jointly, so exact k-NN costs one model call per
document per query. ANNCUR factorises the query x document score matrix instead. Offline, a set
of k_q anchor queries (e.g. the training queries) is scored against every document: the matrix
R (k_q x N). Online, a test query is scored against k_i anchor items only (the row c, 1 x k_i);
since the test query's scores are treated as a combination of the anchor queries' scores,
its scores on all documents are approximated CUR-style by

    s_hat = c @ pinv(R[:, anchors]) @ R,

the top `rerank_depth` documents by s_hat (outside the anchors) are scored exactly, and the run
keeps each document's best estimate: the exact score where the cross-encoder was called
(anchors and reranked documents), s_hat elsewhere. Cross-encoder calls per query = k_i +
rerank_depth, whatever N. With k_i = N anchor items and R of full column rank, pinv(R) @ R is
the identity and s_hat is the exact score row.

Anchor items are drawn uniformly at random (seeded) once per corpus and shared by all queries,
as in the paper's main setting. The offline matrix is cached on disk, keyed by the scorer's
`fingerprint`, the corpus and the anchor queries, because it costs k_q x N cross-encoder calls;
a scorer without a fingerprint is not cached (its name need not change with its weights).

Takes any `PairScorer` (irjax/retrieval/rerank.py), so it runs with a trained cross-encoder or,
in tests, with a scorer whose exact k-NN is known.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from irjax.data.collection import Collection, load_qrels, load_queries
from irjax.data.resolve import resolve_dataset
from irjax.data.runs import Run
from irjax.errors import ConfigError
from irjax.files import atomic_write_bytes, cache_root, quarantine
from irjax.retrieval.rerank import PairScorer

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def score_matrix(scorer: PairScorer, queries: Sequence[str], documents: Sequence[str],
                 batch_size: int = 64, costs: dict[str, float] | None = None) -> np.ndarray:
    """float64 [len(queries), len(documents)]: every pair scored, `batch_size` pairs a call.

    `costs`, when given, accumulates the scorer's per-call `costs` (e.g. FLOPs)."""
    out = np.zeros((len(queries), len(documents)), np.float64)
    pairs = [(i, j) for i in range(len(queries)) for j in range(len(documents))]
    score_listed_pairs(scorer, queries, documents, pairs, out, batch_size, costs)
    return out


def score_listed_pairs(scorer: PairScorer, queries: Sequence[str], documents: Sequence[str],
                       pairs: Sequence[tuple[int, int]], out: np.ndarray, batch_size: int = 64,
                       costs: dict[str, float] | None = None) -> None:
    """Writes the scores of `pairs` (query row, document column) into `out`, in batches."""
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        scores = np.asarray(scorer.score_pairs([queries[i] for i, _ in chunk],
                                               [documents[j] for _, j in chunk]), np.float64)
        if scores.shape != (len(chunk),):
            raise ValueError(f"{scorer.name}.score_pairs returned shape {scores.shape} for "
                             f"{len(chunk)} pairs; a PairScorer returns one score per pair")
        rows, cols = zip(*chunk)
        out[list(rows), list(cols)] = scores
        if costs is not None:
            for key, value in getattr(scorer, "costs", {}).items():
                costs[key] = costs.get(key, 0.0) + float(value)


def cur_projection(anchor_matrix: np.ndarray, anchor_items: np.ndarray,
                   rcond: float | None = None) -> np.ndarray:
    """pinv(R[:, anchor_items]) @ R, [k_i, N]: multiplies a query's anchor-item scores into
    approximate scores on every item. `rcond` cuts small singular values (numpy's default
    when None), which keeps a rank-deficient or noisy R[:, anchors] from blowing up."""
    sub = anchor_matrix[:, anchor_items]
    pinv = np.linalg.pinv(sub) if rcond is None else np.linalg.pinv(sub, rcond=rcond)
    return pinv @ anchor_matrix


def choose_anchor_items(num_items: int, count: int, seed: int) -> np.ndarray:
    """`count` distinct item indices drawn uniformly (seeded), sorted."""
    if not 1 <= count <= num_items:
        raise ValueError(f"num_anchor_items={count} must lie in [1, {num_items}] (the corpus "
                         "size); lower it or use a larger corpus")
    return np.sort(np.random.default_rng(seed).choice(num_items, size=count, replace=False))


def _matrix_key(scorer: PairScorer, collection: Collection, anchors: Mapping[str, str]) -> str:
    digest = hashlib.sha256(json.dumps({
        "version": _FORMAT_VERSION, "scorer": scorer.fingerprint,  # type: ignore[attr-defined]
        "corpus": collection.fingerprint()}).encode())
    for qid, text in anchors.items():
        digest.update(json.dumps([qid, text], ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()[:32]


def _save_matrix(path: Path, matrix: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, matrix, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def _load_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The cached matrix, or None (a damaged file is moved aside with a warning)."""
    if not path.exists():
        return None
    try:
        matrix = np.load(path, allow_pickle=False)
        if matrix.shape != shape or not np.all(np.isfinite(matrix)):
            raise ValueError(f"shape {matrix.shape} (expected {shape}) or non-finite scores")
        return matrix
    except (OSError, ValueError) as e:
        moved = quarantine(path)
        log.warning("anchor score cache %s is damaged (%s); moved it to %s and scoring again",
                    path, e, moved)
        return None


class AnnCURRetriever:
    """A Retriever over a cross-encoder (any PairScorer) by CUR matrix factorisation.

    Anchor queries: `anchor_queries` (id -> text) when given, else the judged queries of
    `anchor_split` in `anchor_dataset` (default: the evaluated collection's own folder; name the
    full collection when evaluating on a sub-corpus of it), the first `num_anchor_queries` of
    them (all when None). Queries being retrieved for are never anchors. `cache_dir` holds the
    offline matrices (default $IRJAX_CACHE_DIR/anncur); `rcond` see `cur_projection`.
    """

    def __init__(self, scorer: PairScorer, num_anchor_items: int = 100, rerank_depth: int = 100,
                 anchor_split: str = "train", num_anchor_queries: int | None = None,
                 anchor_dataset: str | None = None,
                 anchor_queries: Mapping[str, str] | None = None, seed: int = 0,
                 batch_size: int = 64, rcond: float | None = None, cache_dir: str | None = None,
                 name: str | None = None):
        if num_anchor_items < 1:
            raise ValueError(f"num_anchor_items={num_anchor_items} must be >= 1")
        if rerank_depth < 0:
            raise ValueError(f"rerank_depth={rerank_depth} must be >= 0 (0: no exact reranking)")
        if num_anchor_queries is not None and num_anchor_queries < 1:
            raise ValueError(f"num_anchor_queries={num_anchor_queries} must be >= 1 or None (all)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.scorer = scorer
        self.num_anchor_items = num_anchor_items
        self.rerank_depth = rerank_depth
        self.anchor_split = anchor_split
        self.num_anchor_queries = num_anchor_queries
        self.anchor_dataset = anchor_dataset
        self.fixed_anchor_queries = dict(anchor_queries) if anchor_queries is not None else None
        self.seed = seed
        self.batch_size = batch_size
        self.rcond = rcond
        self.cache_dir = cache_dir
        self.name = name or f"anncur({scorer.name},ki={num_anchor_items},depth={rerank_depth})"
        self.timings: dict[str, float] = {}
        self._stats: dict[str, float] = {}

    def index_stats(self) -> dict[str, float]:
        """What the method keeps per document (float64): the projection pinv(R[:, anchors]) @ R
        that online search multiplies (k_i numbers), and the anchor matrix R it came from (k_q)."""
        return dict(self._stats)

    # -- offline ------------------------------------------------------------------------------
    def anchor_queries(self, collection: Collection, exclude: Mapping[str, str]) -> dict[str, str]:
        """The anchor queries (id -> text), without any query in `exclude`."""
        if self.fixed_anchor_queries is not None:
            source = self.fixed_anchor_queries
        else:
            root = resolve_dataset(self.anchor_dataset) if self.anchor_dataset else collection.path
            qrels_path = Path(str(root)) / "qrels" / f"{self.anchor_split}.tsv"
            if not qrels_path.is_file():
                raise ConfigError(f"AnnCURRetriever.anchor_split={self.anchor_split!r}: "
                                  f"{qrels_path} does not exist; name a split of {root} whose "
                                  "queries can serve as anchors (e.g. 'train'), or set "
                                  "anchor_dataset to the full collection of a sub-corpus")
            judged = load_qrels(qrels_path)
            texts = load_queries(Path(str(root)) / "queries.jsonl")
            source = {qid: text for qid, text in texts.items() if qid in judged}
        texts_out = set(exclude.values())
        anchors = {qid: text for qid, text in source.items()
                   if qid not in exclude and text not in texts_out}
        if self.num_anchor_queries is not None:
            anchors = dict(list(anchors.items())[:self.num_anchor_queries])
        if not anchors:
            raise ConfigError("AnnCURRetriever has no anchor queries left (all of them are "
                              "being retrieved for, or the anchor split is empty)")
        return anchors

    def anchor_matrix(self, collection: Collection, anchors: Mapping[str, str]) -> np.ndarray:
        """R [k_q, N]: the anchor queries scored against every document (cached on disk)."""
        shape = (len(anchors), len(collection.documents))
        path = None
        if hasattr(self.scorer, "fingerprint"):
            key = _matrix_key(self.scorer, collection, anchors)
            path = Path(self.cache_dir or cache_root() / "anncur") / f"anchors-{key}.npy"
        else:
            log.warning("%s has no fingerprint (what identifies its weights), so its anchor "
                        "score matrix is not cached", self.scorer.name)
        matrix = None if path is None else _load_matrix(path, shape)
        if matrix is not None:
            log.info("loaded the %d x %d anchor score matrix from %s", *shape, path)
            return matrix
        log.info("scoring %d anchor queries x %d documents with %s (%d calls)", *shape,
                 self.scorer.name, shape[0] * shape[1])
        start = time.perf_counter()
        matrix = score_matrix(self.scorer, list(anchors.values()),
                              [d.contents for d in collection.documents], self.batch_size)
        self.timings["offline_scoring_s"] = time.perf_counter() - start
        self.timings["offline_ce_calls"] = float(matrix.size)
        if path is not None:
            _save_matrix(path, matrix)
        return matrix

    # -- online -------------------------------------------------------------------------------
    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        self.timings = {}
        start = time.perf_counter()
        anchors = self.anchor_queries(collection, queries)
        matrix = self.anchor_matrix(collection, anchors)
        items = choose_anchor_items(matrix.shape[1], self.num_anchor_items, self.seed)
        projection = cur_projection(matrix, items, self.rcond)
        self.timings["offline_s"] = time.perf_counter() - start
        self._stats = {"bytes_per_doc": float(projection.shape[0] * projection.itemsize),
                       "anchor_matrix_bytes_per_doc": float(matrix.shape[0] * matrix.itemsize)}
        run, costs = self.search(queries, [d.contents for d in collection.documents],
                                 collection.doc_ids, items, projection, k)
        n = max(len(queries), 1)
        self.timings.update({
            "online_s": costs.pop("online_s"),
            "anchor_queries": float(len(anchors)), "anchor_items": float(len(items)),
            "rerank_depth": float(self.rerank_depth)})
        self.timings["online_ms_per_query"] = 1000 * self.timings["online_s"] / n
        for key, total in costs.items():
            self.timings[f"{key}_per_query"] = total / n
        return run

    def search(self, queries: Mapping[str, str], documents: Sequence[str],
               doc_ids: Sequence[str], items: np.ndarray, projection: np.ndarray, k: int
               ) -> tuple[Run, dict[str, float]]:
        """The online step for `queries` given the anchor items and their projection: anchor
        scores, s_hat, exact scores of the top `rerank_depth`; also the costs (totals)."""
        start = time.perf_counter()
        texts = list(queries.values())
        costs: dict[str, float] = {}
        scores = np.zeros((len(texts), len(documents)), np.float64)
        exact = np.zeros(scores.shape, bool)
        anchor_pairs = [(i, int(j)) for i in range(len(texts)) for j in items]
        score_listed_pairs(self.scorer, texts, documents, anchor_pairs, scores,
                           self.batch_size, costs)
        approx = scores[:, items] @ projection                          # [queries, N]
        exact[:, items] = True
        candidates = np.where(exact, -np.inf, approx)
        depth = min(self.rerank_depth, len(documents) - len(items))
        rerank_pairs: list[tuple[int, int]] = []
        if depth > 0:
            top = np.argpartition(-candidates, depth - 1, axis=1)[:, :depth]
            rerank_pairs = [(i, int(j)) for i in range(len(texts)) for j in top[i]]
            score_listed_pairs(self.scorer, texts, documents, rerank_pairs, scores,
                               self.batch_size, costs)
            rows, cols = zip(*rerank_pairs)
            exact[list(rows), list(cols)] = True
        final = np.where(exact, scores, approx)
        costs["ce_calls"] = float(len(anchor_pairs) + len(rerank_pairs))
        costs["online_s"] = time.perf_counter() - start
        keep = min(k, len(documents))
        run: Run = {}
        for i, qid in enumerate(queries):
            top = np.argpartition(-final[i], keep - 1)[:keep]
            run[qid] = {doc_ids[j]: float(final[i, j]) for j in top}
        return run, costs
