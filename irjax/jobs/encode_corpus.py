"""The corpus-encoding job: a collection's documents -> embedding shards, on every process and
device of the job, resumable (pyserini's sharded encoding, t5x's chunked inference).

    WORKDIR/embeddings/      manifest.json + shard-NNNNN.npy (+ .scales.npy) + shard-NNNNN.done
    WORKDIR/encode_summary.json   documents, shards, dtype, bytes per document, this run's docs/s

The corpus is streamed: each process reads only the rows of its shards (shard s belongs to
process s % P). Killed, the same command continues at the first incomplete shard and writes
byte-identical shards. Evaluation and indexing jobs read the shards from there
(`EmbeddingShards.open`). WORKDIR, `output` and the dataset may be URIs (gs://...): a pod's
processes then write their shards straight to the bucket.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import jax

from irjax.data.resolve import open_collection
from irjax.files import atomic_write_text
from irjax.models.dual_encoder import TextEncoder
from irjax.parallel.processes import is_logging_process
from irjax.paths import as_path
from irjax.retrieval.corpus_encoding import DTYPES
from irjax.retrieval.distributed import DEFAULT_SHARD_SIZE, encode_corpus_shards
from irjax.retrieval.mesh_encoding import mesh_text_encoder

log = logging.getLogger(__name__)

SUMMARY = "encode_summary.json"


def encode_corpus(dataset: str, workdir: str, encoder: TextEncoder, split: str = "test",
                  dtype: str = "float32", shard_size: int = DEFAULT_SHARD_SIZE,
                  per_device_batch: int = 64, data_dir: str | None = None,
                  output: str | None = None) -> dict[str, Any]:
    """Encodes every document of `dataset` into `output` (default WORKDIR/embeddings); `split`
    only names the qrels file the collection is opened with."""
    if dtype not in DTYPES:
        raise ValueError(f"encode_corpus.dtype must be one of {DTYPES}, got {dtype!r}")
    start = time.perf_counter()
    collection = open_collection(dataset, split, data_dir, streamed=True)
    directory = as_path(output) if output else as_path(workdir) / "embeddings"
    shards, stats = encode_corpus_shards(
        collection, mesh_text_encoder(encoder, per_device_batch), directory,
        model=encoder.fingerprint, dim=encoder.dim, dtype=dtype, shard_size=shard_size,
        progress=f"encoding {collection.name}")
    summary = {"dataset": collection.name, "documents": shards.layout.count,
               "shards": shards.layout.num_shards, "shard_size": shard_size, "dtype": dtype,
               "dim": encoder.dim, "model": encoder.name, "output": str(directory),
               "bytes_per_document": shards.bytes_per_document(),
               "processes": jax.process_count(), "devices": jax.device_count(),
               "seconds": round(time.perf_counter() - start, 2), **stats}
    if is_logging_process():
        atomic_write_text(as_path(workdir) / SUMMARY, json.dumps(summary, indent=2) + "\n")
        log.info("encoded %s: %s", collection.name, json.dumps(stats))
    return summary
