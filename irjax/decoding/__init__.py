"""Decoding for generative models: trie-constrained beam search for generative retrieval (DSI)
and ancestral sampling for query generation (docT5query). Both take a model-agnostic
`log_prob_fn(decoder_input_ids [N, L], step) -> [N, V]`, so they work with any decoder; sampling
also takes a stateful one-position `step_fn` (incremental decoding with a key/value cache).
Decoder-only LMs generate through `lm_generation` (their own KV cache and shared prefixes)."""
from irjax.decoding.constrained_beam_search import constrained_beam_search, rank_docids
from irjax.decoding.sampling import (filter_logits, sample_sequences,
                                     sample_sequences_with_state)

__all__ = ["constrained_beam_search", "rank_docids", "filter_logits", "sample_sequences",
           "sample_sequences_with_state"]
