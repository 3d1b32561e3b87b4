"""The steps every retriever takes the same way on one process or many: encode the corpus into
shards (each process its own), split the queries over processes and gather their vectors,
search the local index shards and merge every process's top-k into the global one.

With one process each step degenerates to the plain single-device computation; with N processes
the run is identical (encoding is deterministic, merging is exact), which the tests check by
running `launch/local_multiprocess.py` against one process.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from irjax.data.collection import Collection
from irjax.data.runs import Run
from irjax.index.sharded import ShardedIndex, merge_top_k, write_shards_file
from irjax.parallel.processes import (allgather_arrays, barrier, is_logging_process,
                                      process_shard)
from irjax.paths import AnyPath, as_path
from irjax.retrieval.corpus_encoding import EmbeddingShards, encode_shards
from irjax.retrieval.mesh_encoding import MeshEncoder, pooled_vectors

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 65536


def encode_texts(encoder: MeshEncoder, texts: Sequence[str], dim: int,
                 on_done: Callable[[int], None] | None = None) -> np.ndarray:
    """float32 [len(texts), dim] pooled vectors in input order."""
    outputs, batches = encoder.encode(texts, on_done)
    return pooled_vectors(outputs, batches, len(texts), dim)


def encode_corpus_shards(collection: Collection, encoder: MeshEncoder, directory: str | AnyPath, *,
                         model: str, dim: int, dtype: str = "float32",
                         shard_size: int = DEFAULT_SHARD_SIZE,
                         progress: str | None = None) -> tuple[EmbeddingShards, dict[str, float]]:
    """Encodes the shards of `collection` this process owns into `directory` (resuming), waits
    for every process, and returns the shards and this process's throughput.

    Every process writes the manifest if it is missing (the same bytes, atomically), so
    `directory` may be shared storage or each host's own disk (then each host holds the shards
    it encoded, which is all its index part needs)."""
    count = len(collection.documents)
    shards = EmbeddingShards.create(directory, model=model, corpus=collection.fingerprint(),
                                    count=count, dim=dim, dtype=dtype, shard_size=shard_size)
    owned = shards.layout.owned_by(jax.process_index(), jax.process_count())
    bar = None
    if progress is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(shards.layout.rows(s)) for s in owned), desc=progress,
                   unit="doc", disable=not is_logging_process())
    try:
        stats = encode_shards(
            shards, lambda rows: collection.documents[rows.start:rows.stop],
            lambda texts, done: encode_texts(encoder, texts, dim, done), owned,
            progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    barrier("irjax-embeddings-written")
    return shards, stats


def build_local_index(shards: EmbeddingShards, doc_ids: Sequence[str], kind: str,
                      options: dict[str, Any], save_to: str | os.PathLike | None = None,
                      parts_per_process: int | None = None,
                      transform: Callable[[np.ndarray], np.ndarray] | None = None
                      ) -> ShardedIndex:
    """An index over the corpus rows whose embedding shards this process owns (only the first
    len(doc_ids) rows), in `parts_per_process` parts of consecutive owned shards (None: one part
    per shard, the same parts on any number of processes); saved under
    `save_to` (a folder per part; process 0 lists every process's parts in shards.json once all
    have saved). Part numbers are global (parts_of). `transform` maps each part's decoded
    vectors to the ones indexed (a Matryoshka prefix, for instance)."""
    index = ShardedIndex(kind, **options)
    layout, limit = shards.layout, len(doc_ids)
    process, count = jax.process_index(), jax.process_count()

    def parts_of(owner: int) -> list[tuple[int, np.ndarray]]:
        """(global part number, corpus rows) of `owner`'s parts: the shard number when each
        shard is its own part, else owner + i * P for its i-th group of shards."""
        owned = [s for s in layout.owned_by(owner, count) if layout.rows(s).start < limit]
        wanted = len(owned) if parts_per_process is None else parts_per_process
        groups = np.array_split(np.asarray(owned, np.int64), max(1, min(wanted, len(owned))))
        groups = [group for group in groups if len(group)]
        return [(int(group[0]) if parts_per_process is None else owner + i * count,
                 np.concatenate([np.arange(layout.rows(int(s)).start,
                                           min(layout.rows(int(s)).stop, limit)) for s in group]))
                for i, group in enumerate(groups)]

    for part, rows in parts_of(process):
        vectors = np.empty((len(rows), shards.dim), np.float32)  # filled shard by shard
        at = 0
        for shard, taken in _shard_slices(layout, rows):
            vectors[at:at + len(taken)] = shards.load(shard)[:len(taken)]
            at += len(taken)
        if transform is not None:
            vectors = transform(vectors)
        index.add(part, rows, vectors, [doc_ids[int(r)] for r in rows])
        del vectors
    if save_to is not None:
        index.save(save_to, write_manifest=False)
        barrier("irjax-index-saved")
        if is_logging_process():
            every = {part: rows for owner in range(count) for part, rows in parts_of(owner)}
            write_shards_file(as_path(save_to), kind, index.metric, index.options, every)
    return index


def _shard_slices(layout: Any, rows: np.ndarray) -> list[tuple[int, range]]:
    """(embedding shard, the rows of it that `rows` takes) in order."""
    out = []
    for shard in range(layout.num_shards):
        full = layout.rows(shard)
        take = rows[(rows >= full.start) & (rows < full.stop)]
        if len(take):
            out.append((shard, range(int(take[0]), int(take[-1]) + 1)))
    return out


def my_share(count: int) -> slice:
    """This process's contiguous share of `count` items (queries, for instance)."""
    return process_shard(count)


def gather_rows(local: np.ndarray) -> np.ndarray:
    """Every process's rows stacked in process order: the inverse of splitting by `my_share`."""
    return np.concatenate(allgather_arrays(local), axis=0)


def search_everywhere(index: ShardedIndex, queries: np.ndarray, k: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Global (scores, rows) [q, k]: every process searches its shards for all queries, then the
    per-process top-k lists are merged (identically on every process)."""
    scores, rows = index.search(queries, k)
    if jax.process_count() == 1:
        return scores, rows
    every_scores, every_rows = allgather_arrays(scores), allgather_arrays(rows)
    return merge_top_k(list(zip(every_scores, every_rows)), k)


def to_run(query_ids: Sequence[str], scores: np.ndarray, rows: np.ndarray,
           doc_ids: Sequence[str]) -> Run:
    """A run from global rows (-1 entries are empty slots)."""
    run: Run = {}
    for qid, score_row, doc_rows in zip(query_ids, scores.tolist(), rows.tolist()):
        run[qid] = {doc_ids[r]: s for r, s in zip(doc_rows, score_row) if r >= 0}
    return run
