"""Few-shot query generation speed of a GGUF decoder LM with generate()'s speed switches on (the
default) versus off (the earlier path), in one process; and the peak memory of loading the model.

    .venv/bin/python tools/bench_lm_generation.py [--lm smollm2-135m-instruct] [--docs 16]
        [--rounds 3] [--out tools/results/lm_generation/speed_smollm2.json]
    .venv/bin/python tools/bench_lm_generation.py --memory [--lm qwen2.5-coder-0.5b-instruct]

Speed: the real LM, SciFact's first --docs corpus documents (2 queries each, the job's sampling
settings: temperature 0.7, top-p 0.95, 32 new tokens, 16 rows per call) and a 3-shot prompt of
the first SciFact train pairs, through LMQueryGenerator as the job runs it. The "baseline" path
turns off prompt bucketing, last-position-only logits and the top-p candidate search
(`generate(bucket=None, last_logits_only=False, nucleus_candidates=None)`); both use the same
device-resident parameters. Rounds alternate the two paths so load from other processes hits both
alike; round 0 (compilation) is reported apart, the medians are over the later rounds. Each round
also records whether both paths wrote the same queries (same seed: they should).

Memory: two child processes each load the GGUF and put its parameters on the device, one with
the code of --base-commit (git archive of irjax/ into a temporary folder: the float32 dict of the
whole model, copied by the conversion, then put on the device as the first jitted call did), one
with this checkout (lazy per-tensor dequantisation, `to_device` leaf by leaf); each prints its
peak RSS (VmHWM of /proc/self/status).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ROOT, cpu_summary  # noqa: E402

def peak_rss_mb() -> float:
    """VmHWM (peak resident set) of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def load_only(src: str, lm: str) -> None:
    """Child process: load `lm` with the irjax under `src`, parameters on the device; print JSON."""
    sys.path.insert(0, src)
    import jax
    import jax.numpy as jnp

    from irjax.models import lm_import
    from irjax.models.weights_dir import gguf_path

    began = time.perf_counter()
    _, params = lm_import.load_lm(gguf_path(lm))
    if hasattr(lm_import, "to_device"):
        params = lm_import.to_device(params)
    else:  # the earlier job handed numpy parameters to jit, which copied them to the device
        params = jax.tree.map(jnp.asarray, params)
    jax.block_until_ready(params)
    count = sum(x.size for x in jax.tree.leaves(params))
    print(json.dumps({"src": src, "load_s": round(time.perf_counter() - began, 1),
                      "params": int(count), "peak_rss_mb": round(peak_rss_mb(), 1)}))


def memory(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as base:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base_commit, "irjax"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
        rows = {}
        for name, src in (("baseline", base), ("new", str(ROOT))):
            done = subprocess.run([sys.executable, __file__, "--load-only", src, "--lm", args.lm],
                                  check=True, capture_output=True, text=True)
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
            rows[name]["src"] = args.base_commit if name == "baseline" else "this checkout"
            print(name, rows[name], flush=True)
    return {"lm": args.lm, "base_commit": args.base_commit, **rows,
            "peak_ratio": round(rows["new"]["peak_rss_mb"] / rows["baseline"]["peak_rss_mb"], 3)}


def speed(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT))
    from irjax.data.fewshot_prompts import FewShotExample, PromptConfig
    from irjax.data.resolve import open_collection
    from irjax.decoding.lm_generation import BASELINE_OPTIONS
    from irjax.decoding.lm_query_generation import LMQueryGenerator, SamplingConfig
    from irjax.models.weights_dir import gguf_path

    train = open_collection("scifact", "train")
    texts = {d.doc_id: f"{d.title}. {d.text}".strip(". ") for d in train.documents}
    examples = []
    for qid in sorted(train.qrels)[: args.shots]:
        doc_id = next(d for d, grade in sorted(train.qrels[qid].items()) if grade > 0)
        examples.append(FewShotExample(doc_id, texts[doc_id], train.queries[qid]))
    docs = [(d.doc_id, texts[d.doc_id]) for d in train.documents[: args.docs]]
    sampling = SamplingConfig(queries_per_document=2, batch_size=args.batch_size,
                              max_new_tokens=32, temperature=0.7, top_p=0.95)
    prompt = PromptConfig(style="promptagator", doc_max_tokens=160, query_max_tokens=40)
    generator = LMQueryGenerator.from_gguf(gguf_path(args.lm), prompt, examples, sampling)
    paths = {"baseline": BASELINE_OPTIONS, "new": {}}
    times: dict[str, list[float]] = {name: [] for name in paths}
    same = []
    for round_ in range(args.rounds + 1):
        written = {}
        for name, options in paths.items():
            generator.generate_options = options
            began = time.perf_counter()
            written[name] = [r["raw"] for r in generator.generate(docs, batch_number=round_)]
            times[name].append(time.perf_counter() - began)
            print(f"round {round_} {name}: {times[name][-1]:.1f} s", flush=True)
        same.append(written["baseline"] == written["new"])
    queries = len(docs) * sampling.queries_per_document
    result = {"lm": args.lm, "cpu": cpu_summary(), "docs": len(docs), "queries": queries,
              "rows_per_call": args.batch_size, "rounds": args.rounds,
              "same_queries_per_round": same}
    for name in paths:
        steady = statistics.median(times[name][1:])
        result[name] = {"first_round_s": round(times[name][0], 2),
                        "median_s": round(steady, 2), "queries_per_s": round(queries / steady, 3),
                        "all_s": [round(t, 2) for t in times[name]]}
    result["speedup_median"] = round(result["baseline"]["median_s"] / result["new"]["median_s"], 2)
    result["speedup_first_round"] = round(result["baseline"]["first_round_s"]
                                          / result["new"]["first_round_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default="smollm2-135m-instruct")
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the first")
    parser.add_argument("--memory", action="store_true", help="peak RSS of loading, old and new")
    parser.add_argument("--base-commit", default="13d8ff8", help="the baseline code (--memory)")
    parser.add_argument("--load-only", metavar="SRC", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="write the result JSON here")
    args = parser.parse_args()
    if args.load_only:
        load_only(args.load_only, args.lm)
        return
    print(cpu_summary(), flush=True)
    result = memory(args) if args.memory else speed(args)
    print(json.dumps(result, indent=1))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
