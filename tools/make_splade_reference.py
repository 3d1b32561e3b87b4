"""Writes tests/fixtures/splade_tiny_reference.npz: Hugging Face transformers' own SPLADE vectors
of SPLADE-tiny (BertForMaskedLM), which irjax's SpladeEncoder must reproduce.

The reference comes from the PyTorch implementation, run in the gitignored reference venv
(.venv-ref, see tools/make_reference_vectors.py --setup); irjax never imports torch:

    python tools/fetch_weights.py splade-tiny
    .venv-ref/bin/python tools/make_splade_reference.py [--weights DIR]

SPLADE vectors: max over unmasked tokens of log(1 + ReLU(MLM logits)). The fixture holds the texts,
their token ids and the vectors as (row, term, weight) triples of the non-zeros (a few KB).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "tests" / "fixtures" / "splade_tiny_reference.npz"
TEXTS = [
    "what causes muscle cramps in athletes",
    "Vitamin D deficiency is associated with bone loss in elderly women.",
    "Learned sparse retrieval expands documents with related vocabulary terms.",
]


def main() -> None:
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("IRJAX_WEIGHTS_DIR", Path.home() / ".cache/irjax/weights"))
    parser.add_argument("--weights", type=Path, default=default / "splade-tiny")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    model = AutoModelForMaskedLM.from_pretrained(args.weights).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.weights)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    weights = torch.max(torch.log1p(torch.relu(logits)) * batch["attention_mask"][..., None], dim=1)
    dense = weights.values.numpy().astype(np.float32)
    rows, terms = np.nonzero(dense)
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez(tmp, texts=np.array(TEXTS), input_ids=batch["input_ids"].numpy().astype(np.int32),
             rows=rows.astype(np.int32), terms=terms.astype(np.int32),
             weights=dense[rows, terms], vocab_size=np.int32(dense.shape[1]))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(TEXTS)} texts, {rows.size} non-zero weights")


if __name__ == "__main__":
    main()
