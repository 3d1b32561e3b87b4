"""Builds the scaling study's collection: SciFact's corpus followed by N distractor passages
recombined from real sentences of the other collections (NFCorpus and Cranfield documents, so
document-disjoint from SciFact), with SciFact's queries and test judgments unchanged.

    python tools/scale_corpus.py --out workdir/scale/scifact_1m --distractors 1000000

Writes OUT/corpus.jsonl (SciFact first, then distractor-00000000 ...), queries.jsonl,
qrels/test.tsv and corpus_info.json (sources, distinct sentences available and used, seed).
Because passage i depends only on (seed, i), the first M distractors of this corpus are the
corpus of M, so one encoding serves every size of the study (rows [0, 5183 + N)).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.data.collection import load_corpus  # noqa: E402
from irjax.data.distractors import (SentencePool, distractor_documents,  # noqa: E402
                                    used_sentences, write_corpus)
from irjax.files import atomic_write_text  # noqa: E402

SOURCES = ("nfcorpus", "cranfield")


def data_dir() -> Path:
    return Path(os.environ.get("IRJAX_DATA_DIR", ROOT.parent / "shared" / "data"))


def build(out: Path, distractors: int, seed: int, base: str = "scifact") -> dict:
    """Writes the collection (module docstring) unless OUT/corpus_info.json says it exists."""
    info_path = out / "corpus_info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if (info["distractors"], info["seed"], info["base"]) == (distractors, seed, base):
            return info
        sys.exit(f"{out} holds another corpus ({info['distractors']} distractors, seed "
                 f"{info['seed']}); use another --out")
    start = time.perf_counter()
    source = data_dir()
    pool = SentencePool.from_documents(
        (name, d) for name in SOURCES for d in load_corpus(source / name / "corpus.jsonl"))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "qrels").mkdir(parents=True)
    shutil.copyfile(source / base / "corpus.jsonl", tmp / "corpus.jsonl")
    shutil.copyfile(source / base / "queries.jsonl", tmp / "queries.jsonl")
    shutil.copyfile(source / base / "qrels" / "test.tsv", tmp / "qrels" / "test.tsv")
    base_ids = {d.doc_id for d in load_corpus(source / base / "corpus.jsonl")}
    assert not any(i.startswith("distractor-") for i in base_ids)
    with open(tmp / "corpus.jsonl", "rb+") as f:  # make sure the base corpus ends with a newline
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")
    written = write_corpus(tmp / "corpus.jsonl", distractor_documents(pool, distractors, seed))
    info = {"base": base, "base_documents": len(base_ids), "distractors": written, "seed": seed,
            "sources": list(SOURCES), "source_documents": pool.num_documents,
            "sentences_available": pool.distinct_sentences(),
            "sentences_used": {str(n): used_sentences(pool, n, seed)
                               for n in (10_000, 100_000, distractors) if n <= distractors},
            "build_seconds": round(time.perf_counter() - start, 1)}
    atomic_write_text(tmp / "corpus_info.json", json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--distractors", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(build(args.out, args.distractors, args.seed), indent=2))


if __name__ == "__main__":
    main()
