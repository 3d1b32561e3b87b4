"""Runs dense and multi-vector retrieval on a tiny collection and saves what the equivalence
test compares: the runs as TREC text and the corpus vectors (dense embeddings; the token vectors
of this process's documents). Run as one process, with simulated devices, or under
launch/local_multiprocess.py; only process 0 writes the runs, every process its token vectors.

    python tests/retrieval/equivalence_script.py DATA OUT
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from irjax.parallel.distributed import initialize_distributed  # noqa: E402


def main(data: Path, out: Path) -> None:
    initialize_distributed()
    import jax
    import numpy as np

    from irjax.data.collection import load_collection
    from irjax.data.runs import format_trec_run
    from irjax.data.tokenization import WordPieceTokenizer
    from irjax.models.bert import BertConfig
    from irjax.models.dual_encoder import TextEncoder
    from irjax.models.multi_vector import MultiVectorModel
    from irjax.models.pretrained import load_checkpoint
    from irjax.retrieval.dense import DenseRetriever
    from irjax.retrieval.multi_vector import MaxSimRetriever

    out.mkdir(parents=True, exist_ok=True)
    process = jax.process_index()
    collection = load_collection(data, "test", streamed=True)
    queries = collection.eval_queries()
    runs = {}
    dense = DenseRetriever(TextEncoder.from_pretrained(max_length=32), index="exact",
                           shard_size=8, cache_dir=str(out / "cache"))
    runs["dense"] = dense.retrieve(collection, queries, k=10)
    np.save(out / f"dense-vectors-{process}.npy", dense.encode_corpus(collection))

    checkpoint = load_checkpoint()
    tokenizer = WordPieceTokenizer(checkpoint.directory)
    model = MultiVectorModel(BertConfig.from_json(checkpoint.config_path), dim=16)
    ids = tokenizer.encode(["a b"], 8)
    params = model.init_variables(jax.random.key(0), {"pos_ids": ids.ids, "pos_mask": ids.mask})
    for mode in ("maxsim", "xtr"):
        retriever = MaxSimRetriever(model, params, tokenizer, doc_max_length=32,
                                    query_max_length=16, batch_size=4, mode=mode, k_prime=40)
        runs[mode] = retriever.retrieve(collection, queries, k=10)
    rows = retriever.local_rows(collection)
    tokens = retriever.corpus_vectors(collection)
    np.savez(out / f"tokens-{process}.npz", rows=np.arange(rows.start, rows.stop),
             **{f"doc{rows.start + i}": t for i, t in enumerate(tokens)})
    if process == 0:
        for name, run in runs.items():
            (out / f"{name}.trec").write_text(format_trec_run(run, tag=name))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
