"""Max |logit difference| over the full vocabulary between irjax's DecoderLM and transformers, both
reading the same GGUF file (the parity check behind tests/models/test_lm_parity.py's fixtures).

The reference runs live in the reference venv (torch + transformers, never imported by irjax):
this script calls itself there with `--reference`, which tokenizes the texts with the GGUF's own
tokenizer (as transformers rebuilds it), runs the model in float32 one text at a time (causal, no
padding) and writes the ids and full logits to an .npz. irjax then loads the GGUF, runs the same
ids and compares every logit, then generates greedily (one left-padded batch, KV cache) and
compares the tokens with transformers' `generate`.

    .venv/bin/python tools/lm_parity.py smollm2-135m-instruct gemma3-270m \
        qwen2.5-coder-0.5b-instruct --out tools/results/lm_parity/parity.json

Weights are read from $IRJAX_WEIGHTS_DIR (default ~/.cache/irjax/weights)/<name>/model.gguf.
transformers' GGUF loading needs `gguf` and `accelerate` in the reference venv. Measured (2 CPU
cores, transformers 5.25.0): max |diff| 1.3e-4 (SmolLM2-135M, logits up to 41.5), 7.4e-5
(Gemma 3 270M, up to 35.0), 4.7e-5 (Qwen2.5-Coder-0.5B, up to 27.4), and with the model named on
the command line 6.3e-5 (Qwen2.5-Coder-1.5B, up to 26.6; not a default: ~4 min a side and ~7 GB
per process); top-1 agrees at every position, and greedy generation gives transformers' 16 tokens
for all 3 texts of each model (tools/results/lm_parity/parity.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NEW_TOKENS = 16
DEFAULT_MODELS = ("smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct")
TEXTS = (
    "The capital of France is Paris, and the capital of Germany is",
    "Dense retrieval encodes queries and documents into vectors; a nearest-neighbour search "
    "over the document vectors then returns the passages that",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
)


def reference(gguf: Path, texts: list[str], out: Path) -> None:
    """(reference venv) transformers' float32 logits of each text, written to `out` (.npz)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32)
    model.eval()
    arrays = {}
    for i, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float().numpy()
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                       max_new_tokens=NEW_TOKENS, do_sample=False,
                                       num_beams=1, repetition_penalty=1.0)
        arrays[f"ids_{i}"] = ids[0].numpy().astype(np.int32)
        arrays[f"logits_{i}"] = logits
        arrays[f"generated_{i}"] = generated[0, ids.shape[1]:].numpy().astype(np.int32)
    arrays["version"] = np.asarray(f"transformers {transformers.__version__}")
    eos = model.generation_config.eos_token_id
    arrays["eos_ids"] = np.asarray([] if eos is None else np.atleast_1d(eos), np.int32)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)


def compare(name: str, weights_dir: Path, ref_python: str) -> dict:
    """Runs the reference in a subprocess, then irjax on the same ids; the differences."""
    import jax
    import jax.numpy as jnp

    from irjax.files import sha256_file
    from irjax.models.decoder_lm import DecoderLM
    from irjax.models.lm_import import load_gguf

    gguf = weights_dir / name / "model.gguf"
    if not gguf.exists():
        raise SystemExit(f"{gguf} does not exist; fetch it first (tools/fetch_weights.py {name})")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reference.npz"
        start = time.time()
        subprocess.run([ref_python, __file__, "--reference", str(gguf), "--ref-out", str(out)],
                       check=True)
        ref_seconds = time.time() - start
        ref = dict(np.load(out))
    start = time.time()
    config, params = load_gguf(gguf)
    model = DecoderLM(config)
    apply = jax.jit(lambda p, ids: model.apply({"params": p}, ids))
    worst, scale, top1, tokens = 0.0, 0.0, 0, 0
    for i in range(len(TEXTS)):
        ids, want = ref[f"ids_{i}"], ref[f"logits_{i}"]
        got = np.asarray(apply(params, jnp.asarray(ids[None]))[0])
        worst = max(worst, float(np.abs(got - want).max()))
        scale = max(scale, float(np.abs(want).max()))
        top1 += int((got.argmax(-1) == want.argmax(-1)).sum())
        tokens += len(ids)
    # Greedy generation, all texts in one left-padded batch through the KV cache, against
    # transformers' generate one text at a time.
    from irjax.decoding.lm_generation import generate

    out = generate(model, params, [ref[f"ids_{i}"].tolist() for i in range(len(TEXTS))],
                   max_new_tokens=NEW_TOKENS, eos_ids=ref["eos_ids"].tolist(), greedy=True)
    same = [out.sequences()[i] == ref[f"generated_{i}"].tolist() for i in range(len(TEXTS))]
    return {"model": name, "gguf": f"{name}/model.gguf", "gguf_sha256": sha256_file(gguf),
            "vocab_size": config.vocab_size,
            "positions": tokens, "max_abs_logit_diff": worst, "max_abs_logit": scale,
            "relative": worst / scale, "top1_agreement": top1 / tokens,
            "greedy_generation_identical": f"{sum(same)}/{len(same)} texts, "
                                           f"{NEW_TOKENS} new tokens",
            "reference": str(ref["version"]), "reference_seconds": round(ref_seconds, 1),
            "irjax_seconds": round(time.time() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--weights-dir", type=Path, default=Path(os.environ.get(
        "IRJAX_WEIGHTS_DIR", Path.home() / ".cache" / "irjax" / "weights")))
    parser.add_argument("--ref-python", default=str(ROOT / ".venv-ref" / "bin" / "python"))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ref-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:
        reference(args.reference, list(TEXTS), args.ref_out)
        return
    sys.path.insert(0, str(ROOT))
    results = []
    for name in args.models:
        result = compare(name, args.weights_dir, args.ref_python)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
