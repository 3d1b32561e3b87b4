"""Document-encoding throughput of EmbeddingGemma-300m through the path DenseRetriever uses
(document prompt, length buckets, MeshEncoder on the local devices), per compute dtype.

    .venv/bin/python tools/bench_embeddinggemma.py [--docs 256] [--max-length 256]
        [--dtypes float32 bfloat16] [--json OUT.json]

Texts: the first --docs SciFact documents as irjax's Collection gives them (title + " " + text),
from $IRJAX_DATA_DIR. Each dtype is run once untimed (compiling every bucket width) and then
timed end to end from strings to unit vectors (tokenization included). Also prints how far the
bfloat16 vectors are from the float32 ones (min cosine), since bfloat16 is only worth having if
it keeps the vectors.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from irjax.data.resolve import open_collection  # noqa: E402
from irjax.models.embedding_gemma import load_embedding_gemma  # noqa: E402
from irjax.models.embedding_gemma_encoder import EmbeddingGemmaEncoder, checkpoint_digest  # noqa: E402
from irjax.models.weights_dir import weights_dir  # noqa: E402
from irjax.retrieval.distributed import encode_texts  # noqa: E402
from irjax.retrieval.mesh_encoding import mesh_text_encoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    collection = open_collection("scifact", "test")
    texts = [d.contents for d in collection.documents[:args.docs]]
    results, vectors = {}, {}
    directory = weights_dir("embeddinggemma-300m")
    digest = None
    for dtype in args.dtypes:
        model = load_embedding_gemma(directory, dtype=dtype)
        digest = digest or checkpoint_digest(model)
        encoder = EmbeddingGemmaEncoder(model, "document", max_length=args.max_length,
                                        batch_size=args.batch_size, weights_digest=digest)
        mesh = mesh_text_encoder(encoder, encoder.batch_size)
        start = time.perf_counter()
        encode_texts(mesh, texts, encoder.dim)
        warm = time.perf_counter() - start
        start = time.perf_counter()
        vectors[dtype] = encode_texts(mesh, texts, encoder.dim)
        seconds = time.perf_counter() - start
        tokens = sum(len(s) for s in encoder.tokenizer.tokenize(texts, args.max_length))
        results[dtype] = {"docs_per_s": round(len(texts) / seconds, 2),
                          "tokens_per_s": round(tokens / seconds, 1),
                          "seconds": round(seconds, 2), "first_pass_s": round(warm, 2)}
        if "float32" in vectors and dtype != "float32":
            cos = np.sum(vectors[dtype] * vectors["float32"], axis=1)
            results[dtype]["min_cosine_vs_float32"] = round(float(cos.min()), 5)
        print(dtype, results[dtype], flush=True)
        record = {"docs": len(texts), "max_length": args.max_length,
                  "batch_size": args.batch_size, "results": results}
        if args.json:  # after every dtype, so an interrupted run keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.rename(args.json)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
