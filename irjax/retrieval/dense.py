"""Dense retrieval on one process or many: the corpus is encoded into embedding shards (cached
on disk, each process its own), each process indexes its shards, queries are encoded split over
the processes and gathered, and every process's top-k is merged (retrieval/distributed.py)."""
from __future__ import annotations

import functools
import logging
import time
from typing import Any

import jax
import numpy as np

from irjax.data.collection import Collection
from irjax.data.runs import Run
from irjax.choices import check_choice
from irjax.data.tokenization import WordPieceTokenizer
from irjax.files import cache_root
from irjax.index.base import available_kinds, create_index
from irjax.index.embedding_cache import cache_key
from irjax.models.dual_encoder import TextEncoder
from irjax.models.dual_encoder_training import DualEncoderModel
from irjax.parallel.fingerprint import params_digest
from irjax.paths import AnyPath, as_path
from irjax.retrieval.corpus_encoding import DTYPES, EmbeddingShards, EmbeddingShardsError
from irjax.retrieval.distributed import (DEFAULT_SHARD_SIZE, build_local_index,
                                         encode_corpus_shards, encode_texts, gather_rows,
                                         my_share, search_everywhere, to_run)
from irjax.retrieval.mesh_encoding import MeshEncoder, mesh_text_encoder

log = logging.getLogger(__name__)

# A corpus smaller than this many default shards is cut into this many (up to 8 processes share it).
SMALL_CORPUS_SHARDS = 8


class DenseRetriever:
    """Encodes the corpus (embedding shards cached on disk), indexes it shard by shard, encodes
    queries, searches and merges.

    `encoder` embeds documents (and queries, unless a separate `query_encoder` is given): any
    object with the text-encoder contract of `TextEncoder` (name, dim, max_length, batch_size,
    bucket_multiple, micro_batch_tokens, params, encode_batch, tokenizer.pad_id/tokenize,
    fingerprint), e.g. MiniLM's `TextEncoder` or `EmbeddingGemmaEncoder`.
    `dim` (Matryoshka encoders only, which offer `truncate(vectors, dim)`) indexes and searches
    the first `dim` dimensions of every vector, renormalised; the cached corpus shards keep the
    full width, so one corpus encoding serves every `dim`.
    `shard_size` documents make one embedding shard and one index shard; `dtype` is how the
    shards store vectors (float32, float16 or int8; the index is built from the decoded
    float32). `cache_dir` holds the shards, keyed by model, corpus and storage settings
    (default $IRJAX_CACHE_DIR/embeddings). `per_device_batch` rows go to each device per step.
    `embeddings` names shards an `encode_corpus` job wrote: they are used instead of encoding
    (the corpus, or a prefix of it, and the model must be the ones they were encoded from).
    `index_parts=None` (default) builds one index per embedding shard: the parts, and so the
    results of an approximate index (ScaNN, faiss), are the same on any number of processes. An
    int builds that many indexes per process over the rows it owns: fewer, larger indexes
    (faster ScaNN trees at millions of rows), whose approximate results depend on the process
    count (exact search is the same either way).
    `cache_dir`, `embeddings` and `save_index_to` may be URIs (gs://...: irjax/paths.py).
    """

    def __init__(
        self,
        encoder: Any,
        index: str = "exact",
        index_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        save_index_to: str | None = None,
        name: str | None = None,
        query_encoder: Any = None,
        warm_queries: bool = False,
        shard_size: int = DEFAULT_SHARD_SIZE,
        dtype: str = "float32",
        per_device_batch: int | None = None,
        embeddings: str | None = None,
        index_parts: int | None = None,
        dim: int | None = None,
    ):
        check_choice("DenseRetriever.index", index, available_kinds())
        try:  # constructing an unbuilt index is cheap and checks its options now, not later
            create_index(index, **(index_options or {}))
        except (TypeError, ValueError) as e:
            raise ValueError(f"DenseRetriever.index_options={index_options!r} for a {index!r} "
                             f"index: {e}") from e
        check_choice("DenseRetriever.dtype", dtype, DTYPES)
        if shard_size < 1:
            raise ValueError(f"DenseRetriever.shard_size must be >= 1, got {shard_size}")
        self.encoder = encoder
        self.query_encoder = query_encoder or encoder  # separate towers: a different query encoder
        if dim is not None:
            if not all(hasattr(e, "truncate") for e in (self.encoder, self.query_encoder)):
                raise ValueError(f"DenseRetriever.dim={dim}: {encoder.name} is not a Matryoshka "
                                 "encoder (it has no truncate); leave dim unset")
            self.encoder.truncate(np.zeros((1, self.encoder.dim), np.float32), dim)  # checks dim
        self.dim = dim
        self.index_kind = index
        self.index_options = dict(index_options or {})
        self.cache_dir = cache_dir
        self.save_index_to = save_index_to
        self.name = name or f"{encoder.name}{'' if dim is None else f'@{dim}'}+{index}"
        self.shard_size, self.dtype = shard_size, dtype
        self.per_device_batch = per_device_batch or encoder.batch_size
        self.embeddings = embeddings
        self.index_parts = index_parts
        self.timings: dict[str, float] = {}
        # Encode the queries once untimed first, for throughput comparisons (costs a second pass).
        self.warm_queries = warm_queries

    @functools.cached_property
    def _doc_encoder(self) -> MeshEncoder:
        return mesh_text_encoder(self.encoder, self.per_device_batch)

    @functools.cached_property
    def _query_encoder(self) -> MeshEncoder:
        if self.query_encoder is self.encoder:
            return self._doc_encoder
        return mesh_text_encoder(self.query_encoder, self.per_device_batch)

    def effective_shard_size(self, collection: Collection) -> int:
        """`shard_size`, or less for a corpus under SMALL_CORPUS_SHARDS shards: shard s belongs to
        process s % P, so a small corpus in one large shard would be encoded and searched by
        process 0 alone. Depends on the corpus only (not on P), so the shards, their cache and
        the index parts are the same on any number of processes."""
        count = len(collection.documents)
        return max(1, min(self.shard_size, -(-count // SMALL_CORPUS_SHARDS)))

    def embeddings_dir(self, collection: Collection) -> AnyPath:
        key = cache_key(model=self.encoder.fingerprint, corpus=collection.fingerprint(),
                        dtype=self.dtype, shard_size=str(self.effective_shard_size(collection)))
        return as_path(self.cache_dir or cache_root() / "embeddings") / key

    def corpus_shards(self, collection: Collection) -> EmbeddingShards:
        """The corpus's embedding shards, encoding (and resuming) whatever is missing."""
        if self.embeddings is not None:
            return precomputed_shards(self.embeddings, collection, self.encoder.fingerprint)
        shards, stats = encode_corpus_shards(
            collection, self._doc_encoder, self.embeddings_dir(collection),
            model=self.encoder.fingerprint, dim=self.encoder.dim, dtype=self.dtype,
            shard_size=self.effective_shard_size(collection), progress=f"encoding {collection.name} corpus")
        if stats["encoded_docs"]:
            self.timings["encode_docs_per_s"] = stats["docs_per_s"]
        return shards

    def encode_corpus(self, collection: Collection) -> np.ndarray:
        """float32 [num_documents, dim] corpus vectors (decoded from the shards)."""
        return self._truncate(self.corpus_shards(collection).matrix())

    def encode_queries(self, texts: list[str], side: str = "query") -> np.ndarray:
        """float32 [len(texts), dim]: each process encodes its share, all get every vector.
        `side='document'` encodes them with the document encoder instead (texts written to look
        like documents, e.g. HyDE's hypothetical passages; the same encoder for MiniLM)."""
        check_choice("DenseRetriever.encode_queries side", side, ("query", "document"))
        encoder, model = ((self._query_encoder, self.query_encoder) if side == "query"
                          else (self._doc_encoder, self.encoder))
        share = texts[my_share(len(texts))]
        return self._truncate(gather_rows(encode_texts(encoder, share, model.dim)))

    def _truncate(self, vectors: np.ndarray) -> np.ndarray:
        """The vectors as indexed and searched: the Matryoshka prefix when `dim` is set."""
        return vectors if self.dim is None else self.encoder.truncate(vectors, self.dim)

    def retrieve(self, collection: Collection, queries: dict[str, str], k: int) -> Run:
        texts = list(queries.values())
        if self.warm_queries:  # compiles every length bucket, so the timing below is query time
            start = time.perf_counter()
            self.encode_queries(texts)
            self.timings["compile_queries_s"] = time.perf_counter() - start
        start = time.perf_counter()
        query_vectors = self.encode_queries(texts)
        encode_s = time.perf_counter() - start
        run = self.search(collection, list(queries), query_vectors, k)
        self.timings["encode_queries_s"] = encode_s
        return run

    def search(self, collection: Collection, query_ids: list[str], query_vectors: np.ndarray,
               k: int) -> Run:
        """The run of given query vectors (one row per id, from `encode_queries` or combined
        from several of its vectors, as query expansion does) over the corpus index."""
        if len(query_ids) != len(query_vectors):
            raise ValueError(f"{len(query_ids)} query ids but {len(query_vectors)} vectors")
        start = time.perf_counter()
        shards = self.corpus_shards(collection)
        self.timings["encode_corpus_s"] = time.perf_counter() - start
        start = time.perf_counter()
        log.info("building %s index shards over %d vectors", self.index_kind,
                 shards.layout.count)
        index = build_local_index(shards, collection.doc_ids, self.index_kind,
                                  self.index_options, self.save_index_to, self.index_parts,
                                  transform=None if self.dim is None else self._truncate)
        self.timings["index_build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores, rows = search_everywhere(index, np.asarray(query_vectors, np.float32),
                                         min(k, shards.layout.count))
        self.timings["search_s"] = time.perf_counter() - start
        self.timings["search_queries_per_s"] = len(query_ids) / max(self.timings["search_s"],
                                                                    1e-9)
        self.timings["processes"] = jax.process_count()
        return to_run(list(query_ids), scores, rows, collection.doc_ids)


def dual_encoder_retriever(model: DualEncoderModel, params: Any, tokenizer: WordPieceTokenizer,
                           name: str, max_length: int, index: str = "exact",
                           cache_dir: str | None = None) -> DenseRetriever:
    """A `DenseRetriever` over a trained dual encoder's towers (the query tower encodes queries,
    the document tower the corpus; one encoder when the towers are shared). Each tower's
    encoder is fingerprinted by its parameter values, so cached corpus embeddings of other
    parameters are never reused."""
    def encoder(side: str) -> TextEncoder:
        side_params = model.tower(params, side)
        return TextEncoder(model.module, side_params, tokenizer, name=name, max_length=max_length,
                           pooling=model.pooling,
                           fingerprint_parts=(f"params:{params_digest(side_params)}",))

    query = encoder("query")
    doc = query if model.shared_towers else encoder("doc")
    return DenseRetriever(doc, index=index, query_encoder=query, cache_dir=cache_dir)


def precomputed_shards(directory: str | AnyPath, collection: Collection, model: str) -> EmbeddingShards:
    """Shards an `encode_corpus` job wrote, after checking they encode this collection's corpus
    (or a corpus it is a prefix of) with this model, and that the rows it needs are complete."""
    shards = EmbeddingShards.open(directory)
    manifest, rows = shards.manifest, collection.corpus_rows
    if manifest["model"] != model:
        raise EmbeddingShardsError(f"{directory} was encoded by another model (fingerprint "
                                   f"{manifest['model'][:12]}, this encoder {model[:12]})")
    if rows is None or manifest["corpus"] != rows[0] or manifest["count"] < rows[1]:
        raise EmbeddingShardsError(f"{directory} holds embeddings of another corpus than "
                                   f"{collection.path} (or of fewer documents)")
    needed = [s for s in range(shards.layout.num_shards)
              if shards.layout.rows(s).start < rows[1] and not shards.is_complete(s)]
    if needed:
        raise EmbeddingShardsError(f"{directory}: shards {needed[:5]} needed for "
                                   f"{rows[1]} documents are not encoded yet; run the "
                                   "encode_corpus job to the end first (it resumes)")
    return shards
