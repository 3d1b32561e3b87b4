"""The grain input pipeline for dual-encoder training: global batches, local rows, resumable state.

Every process computes the same *global* batch plan from the seed (which pairs and which
negatives), then tokenizes only its own rows `process_shard(global_batch_size)`, so a 2-process
run sees exactly the batches of a 1-process run and no process reads the others' rows. The grain
dataset, the resumable iterator and its fingerprint check are shared with the seq2seq pipeline
(resumable.py); `worker_count=0` (the default) runs in-process: worker processes buy little when
tokenization (Rust, multi-threaded) dominates.

Batch order per epoch ('random' sampler): queries are permuted, each query's pairs follow each
other, and the list is dealt round-robin into the epoch's batches, so one query never appears
twice in a batch; an epoch is a single pass, minus the remainder that does not fill a batch and
any pairs beyond one per batch for a query (both counted). 'tas_balanced' draws every batch from
one query cluster (see tas_sampler.py). Hard negatives are drawn per step from the query's
candidates; a query with too few is topped up with random corpus documents (counted).

Batch layout (b = this process's rows, B = global batch, n = num_hard_negatives):
    query_ids, query_mask     int32 [b, Lq]     Lq = query_max_length ([CLS] ... [SEP], padded)
    pos_ids, pos_mask         int32 [b, Ld]     Ld = doc_max_length
    neg_ids, neg_mask         int32 [b, n, Ld]  only when n > 0
    query_index               int32 [b]         into `.query_ids`
    pos_doc_index             int32 [b]         into `.doc_ids`
    neg_doc_index             int32 [b, n]      only when n > 0
    labels                    int32 [b]         global row = column of the row's own positive
    logit_mask                bool  [b, B*(1+n)] over the global candidates [all B positives,
                              then all negatives row-major]: False where a candidate other than
                              the label is a positive of this row's query (a false negative)
    teacher_pos, teacher_neg  float32 [b], [b, n]  only with a teacher
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from irjax.data.resumable import GlobalBatches, ResumableIterator
from irjax.data.tas_sampler import TASBalancedSampler, balanced_choice
from irjax.data.tokenization import pad_sequences
from irjax.data.training_examples import TrainingPair
from irjax.parallel.processes import process_shard

log = logging.getLogger(__name__)

SAMPLERS = ("random", "tas_balanced")


class Tokenizer(Protocol):
    pad_id: int

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[np.ndarray]: ...


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class DualEncoderBatches(GlobalBatches):
    """The plan of global batches and the grain dataset of this process's rows (module docstring)."""

    kind = "dual_encoder"

    def __init__(self, pairs: Sequence[TrainingPair], tokenizer: Tokenizer, global_batch_size: int,
                 *, query_max_length: int = 64, doc_max_length: int = 256, num_hard_negatives: int = 0,
                 hard_negatives: Mapping[str, Sequence[str]] | None = None,
                 documents: Mapping[str, str] | None = None,
                 teacher: Mapping[str, Mapping[str, float]] | None = None, sampler: str = "random",
                 query_clusters: Mapping[str, int] | None = None, margin_bins: int = 10,
                 seed: int = 0, num_epochs: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, num_threads: int = 2, prefetch: int = 4,
                 worker_count: int = 0):
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
        if global_batch_size < 1 or num_hard_negatives < 0:
            raise ValueError(f"need global_batch_size >= 1 and num_hard_negatives >= 0, got "
                             f"{global_batch_size} and {num_hard_negatives}")
        if num_hard_negatives and documents is None:
            raise ValueError("num_hard_negatives > 0 needs `documents` (doc id -> text) for their texts")
        if teacher is not None and num_hard_negatives < 1:
            raise ValueError("margin-MSE with a teacher needs num_hard_negatives >= 1")
        self.tokenizer, self.global_batch_size = tokenizer, global_batch_size
        self.query_max_length, self.doc_max_length = query_max_length, doc_max_length
        self._setup(num_epochs, num_threads, prefetch, worker_count)
        self.num_negatives, self.seed = num_hard_negatives, seed
        self.sampler_name, self.margin_bins = sampler, margin_bins
        self.shard = process_shard(global_batch_size, process_index, process_count)
        self.counts: dict[str, int] = {}
        self._index_texts(pairs, documents, teacher)
        self._index_negatives(hard_negatives, documents, teacher)
        self.steps_per_epoch = self._count_steps(sampler)
        self._tas = None
        if sampler == "tas_balanced":
            if query_clusters is None:
                raise ValueError("sampler='tas_balanced' needs query_clusters (see cluster_queries)")
            missing = [q for q in self.query_ids if q not in query_clusters]
            if missing:
                raise ValueError(f"query_clusters lacks {len(missing)} training queries, e.g. {missing[:5]}")
            self._tas = TASBalancedSampler(self.pair_query, np.array(
                [query_clusters[q] for q in self.query_ids]), global_batch_size, seed)
        self.fingerprint = _digest({
            "pairs": _digest([[self.query_ids[q], self.doc_ids[d]] for q, d in
                              zip(self.pair_query.tolist(), self.pair_doc.tolist())]),
            "candidates": _digest([c.tolist() for c in self._candidates]),
            "clusters": _digest(sorted(query_clusters.items())) if query_clusters else None,
            "B": global_batch_size, "Lq": query_max_length,
            "Ld": doc_max_length, "n": num_hard_negatives, "seed": seed, "sampler": sampler,
            "bins": margin_bins, "vocab": getattr(tokenizer, "vocab_size", None),
            "teacher_scores": _digest(sorted((q, [(k, float(v)) for k, v in sorted(d.items())])
                                             for q, d in teacher.items()))
            if teacher is not None else None})  # num_epochs is left out: a run may be extended
        log.info("dual-encoder batches: %d pairs, %d steps/epoch; %s", len(self.pair_query),
                 self.steps_per_epoch, self.summary())

    # -- tables ---------------------------------------------------------------------------------
    def _index_texts(self, pairs, documents, teacher) -> None:
        """Query and document tables; pairs whose positive has no teacher score are dropped (counted)."""
        if not pairs:
            raise ValueError("no training pairs given")
        self.query_ids: list[str] = []
        self.query_texts: list[str] = []
        self.doc_ids: list[str] = []
        self.doc_texts: list[str] = []
        self._query_index: dict[str, int] = {}
        self._doc_index: dict[str, int] = {}
        pair_query, pair_doc, no_teacher = [], [], 0
        for number, pair in enumerate(pairs):
            if pair.qid not in self._query_index:
                self._query_index[pair.qid] = len(self.query_ids)
                self.query_ids.append(pair.qid)
                self.query_texts.append(pair.query)
            elif self.query_texts[self._query_index[pair.qid]] != pair.query:
                raise ValueError(f"pair {number}: query {pair.qid!r} has two different texts")
            doc = self._add_doc(pair.pos_id, pair.pos_text, f"pair {number}")
            if teacher is not None and pair.pos_id not in teacher.get(pair.qid, {}):
                no_teacher += 1
                continue
            pair_query.append(self._query_index[pair.qid])
            pair_doc.append(doc)
        self.counts["pairs_without_teacher_score_dropped"] = no_teacher
        self.pair_query = np.asarray(pair_query, dtype=np.int64)
        self.pair_doc = np.asarray(pair_doc, dtype=np.int64)
        for doc_id, text in (documents or {}).items():
            self._add_doc(doc_id, text, "documents")
        self.num_corpus_docs = len(self.doc_ids)
        self._relevant = [set() for _ in self.query_ids]
        for pair in pairs:
            self._relevant[self._query_index[pair.qid]].add(self._doc_index[pair.pos_id])
        self._relevant_arrays = [np.array(sorted(r), dtype=np.int64) for r in self._relevant]
        self._teacher = teacher

    def _add_doc(self, doc_id: str, text: str, where: str) -> int:
        index = self._doc_index.get(doc_id)
        if index is None:
            index = self._doc_index[doc_id] = len(self.doc_ids)
            self.doc_ids.append(doc_id)
            self.doc_texts.append(text)
        elif self.doc_texts[index] != text:
            raise ValueError(f"{where}: document {doc_id!r} has a different text than in an earlier "
                             "pair; pass Document.contents everywhere")
        return index

    def _index_negatives(self, hard_negatives, documents, teacher) -> None:
        """Negative candidates per query: hard negatives (else the teacher's scored documents),
        minus positives, minus unscored documents when distilling; too few means random top-up."""
        n = self.num_negatives
        self._candidates = [np.empty(0, np.int64) for _ in self.query_ids]
        counts = dict.fromkeys(("negatives_that_are_positives_removed", "negatives_without_teacher_"
                                "score_removed", "queries_topped_up_with_random_negatives"), 0)
        if n == 0:
            self.counts.update(counts)
            return
        short_with_teacher = []
        for q, qid in enumerate(self.query_ids):
            if hard_negatives is not None:
                source = list(hard_negatives.get(qid, ()))
            else:
                source = list(teacher.get(qid, {})) if teacher is not None else []
            kept = []
            for doc_id in source:
                if doc_id not in self._doc_index:
                    raise ValueError(f"negative {doc_id!r} of query {qid!r} is not in `documents`")
                if self._doc_index[doc_id] in self._relevant[q]:
                    counts["negatives_that_are_positives_removed"] += 1
                elif teacher is not None and doc_id not in teacher.get(qid, {}):
                    counts["negatives_without_teacher_score_removed"] += 1
                else:
                    kept.append(self._doc_index[doc_id])
            self._candidates[q] = np.asarray(kept, dtype=np.int64)
            if len(kept) < n:
                if teacher is not None:
                    short_with_teacher.append(qid)
                else:
                    counts["queries_topped_up_with_random_negatives"] += 1
            if teacher is None and self.num_corpus_docs - len(self._relevant[q]) < n:
                raise ValueError(f"query {qid!r}: the corpus has fewer than {n} non-positive documents")
        if short_with_teacher:  # random documents have no teacher score: drop these queries' pairs
            short = {self._query_index[q] for q in short_with_teacher}
            keep = np.array([q not in short for q in self.pair_query.tolist()], dtype=bool)
            counts["pairs_without_enough_scored_negatives_dropped"] = int((~keep).sum())
            self.pair_query, self.pair_doc = self.pair_query[keep], self.pair_doc[keep]
        self.counts.update(counts)

    def _count_steps(self, sampler: str) -> int:
        """Batches per epoch. The random sampler puts a query at most once per batch, so a query's
        pairs beyond the number of batches cannot be used in that epoch (counted)."""
        per_query = np.bincount(self.pair_query, minlength=len(self.query_ids))
        batch, steps = self.global_batch_size, len(self.pair_query) // self.global_batch_size
        if sampler == "random":
            while np.minimum(per_query, steps).sum() < steps * batch:
                steps -= 1
        if steps == 0:
            raise ValueError(f"{len(self.pair_query)} usable pairs of {int((per_query > 0).sum())} "
                             f"queries cannot fill one global batch of {batch} distinct queries")
        beyond = int(np.maximum(per_query - steps, 0).sum()) if sampler == "random" else 0
        self.counts["pairs_beyond_one_per_batch_per_epoch"] = beyond
        self.counts["remainder_pairs_per_epoch"] = len(self.pair_query) - steps * batch - beyond
        return steps

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.counts.items() if v) or "nothing skipped"

    # -- global plan ----------------------------------------------------------------------------
    def _epoch_plan(self, epoch: int) -> np.ndarray:
        """Pair indices [steps_per_epoch, B] of one epoch of the random sampler (module docstring)."""
        return self._epoch(epoch, self._build_epoch_plan)

    def _build_epoch_plan(self, epoch: int) -> np.ndarray:
        steps, batch = self.steps_per_epoch, self.global_batch_size
        rng = np.random.default_rng([self.seed, epoch, 0])
        rank = rng.permutation(len(self.query_ids))[self.pair_query]  # query's random rank
        grouped = np.lexsort((rng.random(len(rank)), rank))  # by query, random within
        sizes = np.bincount(rank, minlength=len(self.query_ids))
        within = np.arange(len(rank)) - (np.cumsum(sizes) - sizes)[rank[grouped]]
        # More than one pair per batch for a query would repeat it: keep `steps` at most.
        flat = grouped[within < steps][:steps * batch]
        plan = flat.reshape(batch, steps).T  # item k -> batch k % steps, slot k // steps
        return rng.permuted(plan[rng.permutation(steps)], axis=1)

    def _negatives(self, step: int, pair: int) -> np.ndarray:
        """Doc indices [n] of one row's negatives, a pure function of (seed, step, pair)."""
        n, q = self.num_negatives, int(self.pair_query[pair])
        rng = np.random.default_rng([self.seed, step, pair, 1])
        candidates = self._candidates[q]
        if len(candidates) >= n:
            if self._tas is not None and self._teacher is not None:
                scores = self._teacher[self.query_ids[q]]
                pos = scores[self.doc_ids[self.pair_doc[pair]]]
                margins = np.array([pos - scores[self.doc_ids[d]] for d in candidates.tolist()])
                return candidates[balanced_choice(rng, margins, n, self.margin_bins)]
            return candidates[rng.choice(len(candidates), n, replace=False)]
        chosen = list(candidates.tolist())
        while len(chosen) < n:
            doc = int(rng.integers(self.num_corpus_docs))
            if doc not in self._relevant[q] and doc not in chosen:
                chosen.append(doc)
        return np.asarray(chosen, dtype=np.int64)

    def global_rows(self, step: int) -> dict[str, np.ndarray]:
        """The global batch of step `step`: pair indices [B] and negative doc indices [B, n]."""
        epoch, within = divmod(step, self.steps_per_epoch)
        if self._tas is not None:
            pairs = self._tas.batch(epoch, within)
        else:
            pairs = self._epoch_plan(epoch)[within]
        negatives = np.array([self._negatives(step, int(p)) for p in pairs], dtype=np.int64)
        return {"pairs": pairs,
                "negatives": negatives.reshape(len(pairs), self.num_negatives)}

    # -- this process's rows --------------------------------------------------------------------
    def _tokens(self, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        padded = pad_sequences(self.tokenizer.tokenize(texts, max_length), self.tokenizer.pad_id,
                               pad_to=max_length)
        return padded.ids, padded.mask

    def materialize(self, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tokenizes this process's slice of a global batch into the fixed-shape layout."""
        pairs, negatives = rows["pairs"], rows["negatives"]
        local = pairs[self.shard]
        local_neg = negatives[self.shard]
        queries = self.pair_query[local]
        pos_docs = self.pair_doc[local]
        b, n, length = len(local), self.num_negatives, self.doc_max_length
        batch: dict[str, np.ndarray] = {}
        batch["query_ids"], batch["query_mask"] = self._tokens(
            [self.query_texts[q] for q in queries.tolist()], self.query_max_length)
        batch["pos_ids"], batch["pos_mask"] = self._tokens(
            [self.doc_texts[d] for d in pos_docs.tolist()], length)
        if n:
            ids, mask = self._tokens([self.doc_texts[d] for d in local_neg.reshape(-1).tolist()], length)
            batch["neg_ids"], batch["neg_mask"] = ids.reshape(b, n, length), mask.reshape(b, n, length)
        batch["query_index"] = queries.astype(np.int32)
        batch["pos_doc_index"] = pos_docs.astype(np.int32)
        if n:
            batch["neg_doc_index"] = local_neg.astype(np.int32)
        batch["labels"] = np.arange(self.shard.start, self.shard.stop, dtype=np.int32)
        candidates = np.concatenate([self.pair_doc[pairs], negatives.reshape(-1)])
        mask = np.ones((b, len(candidates)), dtype=bool)
        for i, q in enumerate(queries.tolist()):
            mask[i] = ~np.isin(candidates, self._relevant_arrays[q])
            mask[i, self.shard.start + i] = True
        batch["logit_mask"] = mask
        if self._teacher is not None:
            scores = [self._teacher[self.query_ids[q]] for q in queries.tolist()]
            batch["teacher_pos"] = np.array([s[self.doc_ids[d]] for s, d in
                                             zip(scores, pos_docs.tolist())], dtype=np.float32)
            batch["teacher_neg"] = np.array([[s[self.doc_ids[d]] for d in row] for s, row in
                                             zip(scores, local_neg.tolist())], dtype=np.float32)
        return batch

    def example_batch(self) -> dict[str, np.ndarray]:
        """A batch of zeros with this process's shapes and dtypes, e.g. to initialise a model."""
        return {k: np.zeros_like(v) for k, v in self.materialize(self.global_rows(0)).items()}


def make_train_iterator(pairs: Sequence[TrainingPair], tokenizer: Tokenizer, global_batch_size: int,
                        **options: Any) -> ResumableIterator:
    """A resumable iterator of this process's batches; options as for `DualEncoderBatches`."""
    return iter(DualEncoderBatches(pairs, tokenizer, global_batch_size, **options))
