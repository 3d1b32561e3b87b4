"""Collects the HyDE / GenQREnsemble evaluation workdirs into tools/results/hyde/: a markdown
table (nDCG@10, R@100 with and without expansion on the same queries, the LM's ms, tokens and
GFLOPs per query) and 5 example expansions per collection read back from the generation cache.

    python tools/query_expansion_summary.py --out tools/results/hyde --lm smollm2-135m-instruct \\
        scifact:test:100=workdir/hyde/bm25_scifact,workdir/hyde/minilm_scifact,... ...

Each argument is COLLECTION:SPLIT:QUERIES=comma-separated workdirs (baselines and expansions,
all on the same first QUERIES judged queries). LM ms are wall times on a shared 2-core CPU,
measured when the texts were generated (the cache keeps them); compare them only to each other.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.data.instruction_prompts import genqr_templates, hyde_instruction  # noqa: E402
from irjax.data.resolve import open_collection  # noqa: E402
from irjax.decoding.lm_rewriter import normalise  # noqa: E402
from irjax.files import atomic_write_text, cache_root, sha256_file  # noqa: E402
from irjax.models.weights_dir import gguf_path  # noqa: E402


def row(workdir: Path) -> dict:
    record = json.loads((workdir / "metrics.json").read_text())
    t = record["timings"]
    return {"run": workdir.name, "model": record["model"], "queries": record["num_queries"],
            "nDCG@10": record["metrics"]["nDCG@10"], "R@100": record["metrics"]["R@100"],
            # retrieval with the (expanded) queries: the baselines' whole time, the expansions'
            # first stage (their LM time is the next column)
            "retrieval_ms_per_query": t.get("first_stage_ms_per_query",
                                            1000 * record["seconds"] / record["num_queries"]),
            "lm_ms_per_query": t.get("lm_ms_per_query"),
            "lm_tokens_per_query": t.get("lm_tokens_per_query"),
            "gflops_per_query": t["flops_per_query"] / 1e9 if "flops_per_query" in t else None,
            "texts_per_query": t.get("texts_per_query")}


def table(rows: list[dict]) -> str:
    def f(value, digits=4):
        return "–" if value is None else f"{value:.{digits}f}"
    lines = ["| collection | run | queries | nDCG@10 | R@100 | retrieval ms/query | LM ms/query | "
             "LM tokens/query | LM GFLOPs/query | texts/query |", "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['collection']} | {r['run']} | {r['queries']} | {f(r['nDCG@10'])} | "
                     f"{f(r['R@100'])} | {f(r['retrieval_ms_per_query'], 1)} | "
                     f"{f(r['lm_ms_per_query'], 0)} | "
                     f"{f(r['lm_tokens_per_query'], 0)} | {f(r['gflops_per_query'], 1)} | "
                     f"{f(r['texts_per_query'], 1)} |")
    return "\n".join(lines)


def cached_texts(fingerprint: str, template: str) -> dict[str, list[str]]:
    """query text -> texts, from every generation-cache file of this model and template."""
    out: dict[str, list[str]] = {}
    for path in sorted((cache_root() / "lm_generations").glob("*.json")):
        stored = json.loads(path.read_text())
        if stored["parts"]["model"] == fingerprint and stored["parts"]["template"] == template:
            out.update({q: e["texts"] for q, e in stored["entries"].items()})
    return out


def examples(collection: str, split: str, fingerprint: str, count: int = 5) -> str:
    queries = open_collection(collection, split).first_judged_queries(count).eval_queries()
    hyde = cached_texts(fingerprint, hyde_instruction(collection))
    genqr = [cached_texts(fingerprint, t) for t in genqr_templates()]
    parts = [f"# {collection}/{split}: first {count} judged queries\n",
             f"HyDE instruction: `{hyde_instruction(collection)!r}`\n"]
    for qid, text in queries.items():
        key = normalise(text)
        parts.append(f"## {qid}: {text}\n")
        for i, passage in enumerate(hyde.get(key, [])):
            parts.append(f"- HyDE passage {i + 1}: {' '.join(passage.split())}")
        for i, found in enumerate(genqr):
            if key in found:
                parts.append(f"- GenQR instruction {i + 1}: {' '.join(' '.join(found[key]).split())}")
        parts.append("")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lm", default="smollm2-135m-instruct")
    parser.add_argument("groups", nargs="+", help="COLLECTION:SPLIT:QUERIES=workdir,workdir,...")
    args = parser.parse_args()
    fingerprint = sha256_file(gguf_path(args.lm))
    rows = []
    for group in args.groups:
        head, dirs = group.split("=", 1)
        collection, split, _ = head.split(":")
        for d in dirs.split(","):
            if (Path(d) / "metrics.json").exists():
                rows.append({"collection": f"{collection}/{split}", **row(Path(d))})
            else:
                print(f"skipping {d}: no metrics.json", file=sys.stderr)
        atomic_write_text(args.out / f"examples_{collection}.md",
                          examples(collection, split, fingerprint) + "\n")
    atomic_write_text(args.out / "results.md", table(rows) + "\n")
    atomic_write_text(args.out / "results.json", json.dumps(rows, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
