"""A trained BEBR index against plain sign bits of the same vectors, over re-ranking depths.

    python tools/bebr_rerank_depths.py --workdir workdir/bebr_scifact \
        --dual_encoder workdir-main/minilm_scifact/checkpoints [--dataset scifact --split test]

Re-ranking the top N by bits with the float vectors trades reads of float rows for quality; this
prints, for N in (none, 100, 200, 500, 1000), nDCG@10 / R@10 / R@100 / RR@10 of the BEBR bits that
`train_bebr` saved in WORKDIR/index (binariser reused, rebuilt over the same cached corpus vectors)
and of compressed.py's 'binary' sign bits (d / 8 bytes), both through irjax.evaluation's metrics.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.data.resolve import open_collection  # noqa: E402
from irjax.evaluation.metrics import evaluate_run  # noqa: E402
from irjax.index.base import create_index, load_index  # noqa: E402
from irjax.index.bebr_index import BEBRIndex  # noqa: E402
from irjax.jobs.code_training import start_encoder  # noqa: E402
from irjax.retrieval.distributed import to_run  # noqa: E402

DEPTHS = (None, 100, 200, 500, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a train_bebr WORKDIR (holds index/)")
    parser.add_argument("--dual_encoder", default=None, help="the encoder train_bebr started from "
                        "(a train_dual_encoder workdir or checkpoints; omit for zero-shot MiniLM)")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    collection = open_collection(args.dataset, args.split)
    start = start_encoder(args.dual_encoder, None)
    vectors = start.retriever(None).encode_corpus(collection)
    queries = collection.eval_queries()
    query_vectors = start.encoder.encode(list(queries.values()))
    binarizer = load_index(Path(args.workdir) / "index").binarizer
    print("| codes | bytes/doc | rerank | nDCG@10 | R@10 | R@100 | RR@10 |\n|---|---|---|---|---|---|---|")
    for name in ("BEBR", "sign bits"):
        for depth in DEPTHS:
            index = (BEBRIndex(rerank=depth, binarizer=binarizer) if name == "BEBR" else
                     create_index("compressed", codec="binary", rerank=depth))
            index.build(vectors, collection.doc_ids)
            result = index.search(query_vectors, 100)
            run = to_run(list(queries), result.scores, result.indices, collection.doc_ids)
            m = evaluate_run(run, collection.qrels).aggregate
            print(f"| {name} | {index.bytes_per_doc} | {depth or '-'} | {m['nDCG@10']:.4f} | "
                  f"{m['R@10']:.4f} | {m['R@100']:.4f} | {m['RR@10']:.4f} |")


if __name__ == "__main__":
    main()
