"""The grain input pipeline for seq2seq (DSI) training: fixed shapes, seeded epochs, exact resume.

It follows the dual-encoder pipeline (pipeline.py): every process computes the same global batch
plan, a pure function of the mixture's seed and the step, and tokenizes only its own rows
`process_shard(global_batch_size)`; the grain dataset and the resumable, fingerprinted iterator
are the shared ones of resumable.py.

An epoch is one `DSIMixture.epoch_order` (the mixture fixes the share of indexing, retrieval and
pseudo-query examples and reshuffles per epoch) cut into whole batches; the remainder that does
not fill a batch is left out of that epoch (`counts["remainder_examples_per_epoch"]`).

Batch layout (b = this process's rows), all int32 with fixed shapes:
    inputs        [b, Li]  SentencePiece ids of the input text, truncated to Li - 1, then EOS,
                           then 0-padding; Li = inputs_max_length
    inputs_mask   [b, Li]  1 on real tokens (EOS included), 0 on padding
    targets       [b, Lt]  docid tokens, EOS, 0-padding; Lt = targets_max_length (default: the
                           longest docid + 1). Targets are never truncated: a cut docid names no
                           document, so a too small Lt is an error.
    targets_mask  [b, Lt]  1 on docid tokens and EOS
The masks are int32 like the dual-encoder pipeline's. Decoder inputs (targets shifted right)
are the model's business.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from irjax.data.dsi_examples import DSIMixture
from irjax.data.resumable import GlobalBatches, ResumableIterator
from irjax.data.tokenization import pad_sequences
from irjax.parallel.processes import process_shard

log = logging.getLogger(__name__)

BATCH_KEYS = ("inputs", "inputs_mask", "targets", "targets_mask")


class Tokenizer(Protocol):
    """SentencePieceTokenizer's interface: `tokenize` truncates and appends EOS."""

    pad_id: int
    eos_id: int

    def tokenize(self, texts: Sequence[str], max_length: int) -> list[np.ndarray]: ...


class Seq2SeqBatches(GlobalBatches):
    """The plan of global batches over a `DSIMixture` and the grain dataset of this process's rows."""

    kind = "seq2seq"

    def __init__(self, mixture: DSIMixture, tokenizer: Tokenizer, global_batch_size: int, *,
                 inputs_max_length: int = 64, targets_max_length: int | None = None,
                 num_epochs: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, num_threads: int = 2, prefetch: int = 4,
                 worker_count: int = 0):
        if not isinstance(mixture, DSIMixture):
            raise TypeError("pass a DSIMixture (dsi_examples.build_dsi_mixture, or DSIMixture(examples) "
                            "for a plain shuffle of a list of examples)")
        if global_batch_size < 1 or inputs_max_length < 2:
            raise ValueError(f"need global_batch_size >= 1 and inputs_max_length >= 2 (a token and "
                             f"EOS), got {global_batch_size} and {inputs_max_length}")
        self._setup(num_epochs, num_threads, prefetch, worker_count)
        self.mixture, self.tokenizer = mixture, tokenizer
        self.global_batch_size = global_batch_size
        self.inputs_max_length = inputs_max_length
        self.targets_max_length = self._check_targets(targets_max_length)
        self.steps_per_epoch = mixture.epoch_size // global_batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"an epoch of {mixture.epoch_size} examples cannot fill one global batch "
                             f"of {global_batch_size}; lower the batch size or raise examples_per_epoch")
        self.counts = {"remainder_examples_per_epoch": mixture.epoch_size % global_batch_size}
        self.shard = process_shard(global_batch_size, process_index, process_count)
        self.fingerprint = hashlib.sha256(json.dumps({
            "mixture": mixture.fingerprint, "B": global_batch_size, "Li": inputs_max_length,
            "Lt": self.targets_max_length, "vocab": getattr(tokenizer, "vocab_size", None),
            "tokenizer": getattr(getattr(tokenizer, "path", None), "name", None),
        }, sort_keys=True).encode()).hexdigest()  # num_epochs is left out: a run may be extended
        log.info("seq2seq batches: %d examples/epoch, %d steps/epoch of %d; %s", mixture.epoch_size,
                 self.steps_per_epoch, global_batch_size, mixture.summary())

    def _check_targets(self, targets_max_length: int | None) -> int:
        longest = max(range(len(self.mixture.examples)),
                      key=lambda i: len(self.mixture.examples[i].targets))
        need = len(self.mixture.examples[longest].targets)
        if targets_max_length is None:
            return need
        if targets_max_length < need:
            e = self.mixture.examples[longest]
            raise ValueError(f"targets_max_length={targets_max_length} but document {e.doc_id!r} has "
                             f"a target of {need} tokens (docid + EOS); docids are never truncated")
        return targets_max_length

    # -- global plan ----------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return self._epoch(epoch, self.mixture.epoch_order)

    def global_rows(self, step: int) -> np.ndarray:
        """Example indices [B] of global step `step`."""
        epoch, within = divmod(step, self.steps_per_epoch)
        batch = self.global_batch_size
        return self._epoch_order(epoch)[within * batch:(within + 1) * batch]

    # -- this process's rows --------------------------------------------------------------------
    def materialize(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Tokenizes this process's slice of a global batch into the fixed-shape layout."""
        examples = [self.mixture.examples[i] for i in rows[self.shard].tolist()]
        inputs = pad_sequences(self.tokenizer.tokenize([e.inputs for e in examples],
                                                       self.inputs_max_length),
                               self.tokenizer.pad_id, pad_to=self.inputs_max_length)
        targets = pad_sequences([e.targets for e in examples], self.tokenizer.pad_id,
                                pad_to=self.targets_max_length)
        return {"inputs": inputs.ids, "inputs_mask": inputs.mask,
                "targets": targets.ids, "targets_mask": targets.mask}

    def example_batch(self) -> dict[str, np.ndarray]:
        """A batch of zeros with this process's shapes and dtypes, e.g. to initialise a model."""
        b = self.shard.stop - self.shard.start
        li, lt = self.inputs_max_length, self.targets_max_length
        return {"inputs": np.zeros((b, li), np.int32), "inputs_mask": np.zeros((b, li), np.int32),
                "targets": np.zeros((b, lt), np.int32), "targets_mask": np.zeros((b, lt), np.int32)}


def make_seq2seq_iterator(mixture: DSIMixture, tokenizer: Tokenizer, global_batch_size: int,
                          **options: Any) -> ResumableIterator:
    """A resumable iterator of this process's batches; options as for `Seq2SeqBatches`."""
    return iter(Seq2SeqBatches(mixture, tokenizer, global_batch_size, **options))
