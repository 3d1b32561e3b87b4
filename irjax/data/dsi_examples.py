"""Seq2seq training examples for DSI generative retrieval, and their seeded mixture per epoch.

DSI trains one model on two tasks at once (Tay et al. 2022): *indexing* (document text -> its
docid; memorises the corpus) and *retrieval* (query -> docid of a relevant document; learns to
map queries onto that memory). DSI-QG and NCI add *pseudo queries* generated from documents
(e.g. by docT5query), given here as doc id -> list of strings; pseudo queries cut from the corpus
itself (random spans, sentences, titles: corpus_queries.py) come the same way, one kind per source. Every target is the scheme's docid
tokens followed by EOS; inputs stay text and are tokenized (truncated, EOS appended) by the
seq2seq pipeline, so an indexing input is the document's first `inputs_max_length - 1` tokens.

Retrieval examples come from the judgments of the collection's split: build them from the train
split only, never from the split you evaluate on.

The tasks have very different sizes (SciFact: 5,183 documents, ~900 train judgments), so a mixture
fixes how many examples of each kind an epoch holds from the weights, e.g.
`indexing_to_retrieval_ratio=1` gives equal numbers. An epoch is by default the smallest size in
which every example of every kind appears at least once; kinds with fewer examples are repeated
(each example floor or ceil times, a seeded random subset taking the extra copy), so the ratio holds
exactly in every epoch and the order is a pure function of (seed, epoch).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from irjax.data.collection import Collection, Document
from irjax.data.corpus_queries import SOURCES as CORPUS_QUERY_SOURCES
from irjax.data.docids.base import EOS_ID, DocidError, DocidScheme
from irjax.data.tokenization import SentencePieceTokenizer

log = logging.getLogger(__name__)

KINDS = ("indexing", "retrieval", "pseudo_query", "query_generation",
         *CORPUS_QUERY_SOURCES)  # the last: pseudo queries cut from the corpus (corpus_queries.py)


@dataclass(frozen=True)
class Seq2SeqExample:
    """One text -> docid example. `source_id` is the doc id (indexing, pseudo_query) or the query
    id (retrieval); `part` is the chunk number or the pseudo query's position."""

    kind: str
    source_id: str
    doc_id: str
    inputs: str
    targets: tuple[int, ...]  # docid tokens + EOS
    part: int = 0


def docid_target(scheme: DocidScheme, doc_id: str) -> tuple[int, ...]:
    """The decoder target of `doc_id`: its docid tokens, then EOS."""
    return scheme.docid_tokens(doc_id) + (EOS_ID,)


def _chunks(tokenizer: SentencePieceTokenizer, text: str, length: int, count: int) -> list[str]:
    """The first `count` consecutive `length`-token pieces of `text`, decoded back to text."""
    pieces = tokenizer.tokenize([text], length * count, add_eos=False)[0].tolist()
    return [tokenizer.decode(pieces[i:i + length]) for i in range(0, len(pieces), length)]


def indexing_examples(documents: Collection | Sequence[Document], scheme: DocidScheme, *,
                      chunks_per_doc: int = 1, chunk_length: int | None = None,
                      tokenizer: SentencePieceTokenizer | None = None,
                      counts: dict[str, int] | None = None) -> list[Seq2SeqExample]:
    """Document text (title + text) -> docid, one example per document, in corpus order.

    With `chunks_per_doc > 1`, a document also yields its next `chunk_length`-token pieces as
    separate examples (as long as it has text left), so later passages are indexed too; set
    `chunk_length` to the pipeline's `inputs_max_length - 1`. Chunks are decoded SentencePiece
    pieces, i.e. normalised text, and re-tokenize to about the same pieces. Documents with neither
    title nor text are skipped (counted): an input of only EOS teaches nothing.
    """
    docs = documents.documents if isinstance(documents, Collection) else list(documents)
    counts = counts if counts is not None else {}
    counts.setdefault("empty_documents_not_indexed", 0)
    if chunks_per_doc < 1:
        raise ValueError(f"chunks_per_doc must be >= 1, got {chunks_per_doc}")
    if chunks_per_doc > 1 and (chunk_length is None or chunk_length < 1):
        raise ValueError("chunks_per_doc > 1 needs chunk_length (tokens per chunk, e.g. "
                         "inputs_max_length - 1) and a tokenizer")
    if chunks_per_doc > 1 and tokenizer is None:
        tokenizer = SentencePieceTokenizer()
    examples = []
    for doc in docs:
        text = doc.contents
        if not text.strip():
            counts["empty_documents_not_indexed"] += 1
            continue
        target = docid_target(scheme, doc.doc_id)
        parts = [text] if chunks_per_doc == 1 else _chunks(tokenizer, text, chunk_length, chunks_per_doc)
        examples += [Seq2SeqExample("indexing", doc.doc_id, doc.doc_id, part, target, i)
                     for i, part in enumerate(parts)]
    return examples


def retrieval_examples(collection: Collection, scheme: DocidScheme, *, min_grade: int = 1,
                       counts: dict[str, int] | None = None) -> list[Seq2SeqExample]:
    """Query -> docid for every judgment of the split with grade >= `min_grade` (>= 1)."""
    if min_grade < 1:
        raise ValueError(f"min_grade must be >= 1 (grades <= 0 mean non-relevant), got {min_grade}")
    counts = counts if counts is not None else {}
    for key in ("non_positive_judgments_skipped", "below_min_grade_skipped"):
        counts.setdefault(key, 0)
    examples = []
    for qid, query in collection.eval_queries().items():
        for doc_id, grade in collection.qrels[qid].items():
            if grade <= 0:
                counts["non_positive_judgments_skipped"] += 1
            elif grade < min_grade:
                counts["below_min_grade_skipped"] += 1
            else:
                examples.append(Seq2SeqExample("retrieval", qid, doc_id, query,
                                               docid_target(scheme, doc_id)))
    return examples


def pseudo_query_examples(pseudo_queries: Mapping[str, Sequence[str]], scheme: DocidScheme, *,
                          counts: dict[str, int] | None = None,
                          kind: str = "pseudo_query") -> list[Seq2SeqExample]:
    """Pseudo query -> docid, documents in the scheme's order; blank strings are skipped (counted).
    `kind` is "pseudo_query" for generated queries, a corpus_queries source name for the others."""
    if kind not in KINDS:
        raise ValueError(f"example kind {kind!r} is not one of {KINDS}")
    counts = counts if counts is not None else {}
    counts.setdefault("blank_pseudo_queries_skipped", 0)
    unknown = [d for d in pseudo_queries if d not in scheme]
    if unknown:
        raise DocidError(f"pseudo queries name {len(unknown)} documents without a docid, e.g. "
                         f"{unknown[:5]}; were they generated for another collection?")
    examples = []
    for doc_id in scheme.doc_ids:
        queries = pseudo_queries.get(doc_id, ())
        if isinstance(queries, str):
            raise TypeError(f"pseudo_queries[{doc_id!r}] is a string; give a list of query strings")
        for i, query in enumerate(queries):
            if not query.strip():
                counts["blank_pseudo_queries_skipped"] += 1
                continue
            examples.append(Seq2SeqExample(kind, doc_id, doc_id, query,
                                           docid_target(scheme, doc_id), i))
    return examples


class DSIMixture:
    """Examples of several kinds and the seeded order of each epoch (module docstring).

    `weights` maps kind -> relative share of an epoch; None weights each kind by its size (every
    example once per epoch, plainly shuffled). `examples_per_epoch` overrides the epoch size.
    A weighted kind without examples is an error, and so is a kind with examples but no weight.
    """

    def __init__(self, examples: Sequence[Seq2SeqExample], weights: Mapping[str, float] | None = None,
                 *, seed: int = 0, examples_per_epoch: int | None = None,
                 counts: Mapping[str, int] | None = None):
        if not examples:
            raise ValueError("no seq2seq examples given")
        self.examples = tuple(examples)
        self.seed = seed
        self.counts = dict(counts or {})  # inputs skipped while building the examples
        kinds = np.array([KINDS.index(e.kind) if e.kind in KINDS else -1 for e in self.examples])
        if (kinds < 0).any():
            bad = self.examples[int(np.flatnonzero(kinds < 0)[0])].kind
            raise ValueError(f"example kind {bad!r} is not one of {KINDS}")
        self._members = {k: np.flatnonzero(kinds == i) for i, k in enumerate(KINDS)
                         if (kinds == i).any()}
        self.kind_sizes = sizes = {k: len(m) for k, m in self._members.items()}
        self.weights = self._check_weights(weights, sizes)
        self.kind_counts = self._epoch_counts(sizes, examples_per_epoch)
        self.epoch_size = sum(self.kind_counts.values())
        self._members = {k: m for k, m in self._members.items() if self.kind_counts.get(k)}
        self.fingerprint = hashlib.sha256(json.dumps({
            "examples": hashlib.sha256(json.dumps(
                [[e.kind, e.source_id, e.doc_id, e.part, e.inputs, list(e.targets)]
                 for e in self.examples], ensure_ascii=False).encode()).hexdigest(),
            "counts": self.kind_counts, "seed": seed}, sort_keys=True).encode()).hexdigest()
        log.info("DSI mixture: %s", self.summary())

    @staticmethod
    def _check_weights(weights: Mapping[str, float] | None, sizes: dict[str, int]) -> dict[str, float]:
        if weights is None:
            return {k: float(n) for k, n in sizes.items()}
        unknown = [k for k in weights if k not in KINDS]
        unweighted = [k for k in sizes if k not in weights]
        if unknown or unweighted:
            raise ValueError(f"weights name unknown kinds {unknown} or miss kinds {unweighted} that "
                             f"have examples; kinds are {KINDS}")
        for kind, w in weights.items():
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"weight of {kind!r} must be finite and >= 0, got {w}")
            if w > 0 and kind not in sizes:
                raise ValueError(f"weight of {kind!r} is {w} but there are no {kind} examples; set "
                                 "it to 0 or provide them")
        if not any(weights[k] > 0 for k in sizes):
            raise ValueError(f"all weights are 0: {dict(weights)}")
        return {k: float(weights[k]) for k in sizes}

    def _epoch_counts(self, sizes: dict[str, int], examples_per_epoch: int | None) -> dict[str, int]:
        """Examples of each kind per epoch, in the weights' proportions (largest remainder rounding)."""
        total = sum(self.weights.values())
        share = {k: w / total for k, w in self.weights.items() if w > 0}
        if examples_per_epoch is None:
            examples_per_epoch = max(math.ceil(sizes[k] / p - 1e-9) for k, p in share.items())
        if examples_per_epoch < 1:
            raise ValueError(f"examples_per_epoch must be >= 1, got {examples_per_epoch}")
        exact = {k: examples_per_epoch * p for k, p in share.items()}
        counts = {k: math.floor(v + 1e-9) for k, v in exact.items()}
        missing = max(0, examples_per_epoch - sum(counts.values()))
        for k in sorted(exact, key=lambda k: counts[k] - exact[k])[:missing]:  # largest remainders
            counts[k] += 1
        return {k: counts.get(k, 0) for k in sizes}

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Example indices [epoch_size] of epoch `epoch`, shuffled; a pure function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        parts = []
        for kind, members in self._members.items():
            repeats, extra = divmod(self.kind_counts[kind], len(members))
            parts += [np.tile(members, repeats), rng.choice(members, extra, replace=False)]
        return rng.permutation(np.concatenate(parts)).astype(np.int64)

    def summary(self) -> str:
        return ", ".join(f"{k}: {self.kind_counts[k]} per epoch from {self.kind_sizes[k]} examples"
                         for k in self.kind_counts) + f"; epoch of {self.epoch_size}"


def build_dsi_mixture(collection: Collection, scheme: DocidScheme, *,
                      indexing_to_retrieval_ratio: float = 1.0,
                      pseudo_queries: Mapping[str, Sequence[str]] | None = None,
                      pseudo_query_weight: float = 1.0, include_retrieval: bool = True,
                      retrieval_weight: float = 1.0,
                      corpus_queries: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                      corpus_query_weights: Mapping[str, float] | None = None,
                      min_grade: int = 1, chunks_per_doc: int = 1, chunk_length: int | None = None,
                      tokenizer: SentencePieceTokenizer | None = None, seed: int = 0,
                      examples_per_epoch: int | None = None) -> DSIMixture:
    """Indexing examples of the whole corpus, retrieval examples of the collection's split and
    optional pseudo-query examples, mixed with weights indexing : retrieval : pseudo_query =
    `indexing_to_retrieval_ratio` : `retrieval_weight` : `pseudo_query_weight` (each chunk of a
    document counts as one indexing example); a ratio of 0 leaves indexing out (retrieval-only
    fine-tuning), a retrieval weight of 0 (or include_retrieval=False) the labelled queries.
    `corpus_queries` maps a corpus_queries source ('spans', 'sentences', 'start', 'title') to its
    doc id -> queries, mixed in with weight `corpus_query_weights[source]` (default 1)."""
    scheme.check_documents(collection, where=f"{collection.path} ({collection.split})")
    if "test" in collection.split and include_retrieval:
        log.warning("building DSI retrieval examples from split %r; train on the train split only",
                    collection.split)
    counts: dict[str, int] = {}
    examples: list[Seq2SeqExample] = []
    weights: dict[str, float] = {}
    if indexing_to_retrieval_ratio != 0:  # 0: pure retrieval fine-tuning, no indexing examples
        examples += indexing_examples(collection, scheme, chunks_per_doc=chunks_per_doc,
                                      chunk_length=chunk_length, tokenizer=tokenizer, counts=counts)
        weights["indexing"] = indexing_to_retrieval_ratio
    if include_retrieval and retrieval_weight != 0:
        examples += retrieval_examples(collection, scheme, min_grade=min_grade, counts=counts)
        weights["retrieval"] = retrieval_weight
    if pseudo_queries is not None:
        examples += pseudo_query_examples(pseudo_queries, scheme, counts=counts)
        weights["pseudo_query"] = pseudo_query_weight
    corpus_query_weights = dict(corpus_query_weights or {})
    unknown = sorted(set(corpus_query_weights) - set(corpus_queries or {}))
    if unknown:
        raise ValueError(f"corpus_query_weights name sources {unknown} without corpus queries")
    for source, queries in (corpus_queries or {}).items():
        examples += pseudo_query_examples(queries, scheme, counts=counts, kind=source)
        weights[source] = float(corpus_query_weights.get(source, 1.0))
    skipped = ", ".join(f"{k}={v}" for k, v in counts.items() if v)
    if skipped:
        log.info("%s/%s DSI examples: %s", collection.name, collection.split, skipped)
    return DSIMixture(examples, weights, seed=seed, examples_per_epoch=examples_per_epoch,
                      counts=counts)
