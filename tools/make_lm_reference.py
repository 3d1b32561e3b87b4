"""Writes tests/fixtures/lm/: what transformers and sentence-transformers compute for the decoder
LMs and EmbeddingGemma that `tools/fetch_weights.py` puts in the weights cache.

irjax's decoder-LM parity tests compare against these outputs, so they come from the PyTorch
implementations, which irjax never imports; they run in the gitignored .venv-ref (made by
`python tools/make_reference_vectors.py --setup`, which installs torch, transformers,
sentence-transformers and gguf):

    python tools/fetch_weights.py --all          # the weights, once
    python tools/make_lm_reference.py            # re-runs itself under .venv-ref
    python tools/make_lm_reference.py gemma3-270m --data-dir /path/to/beir   # one model

Per GGUF model NAME, `NAME.npz` holds `input_ids` int32 [P=2, T=12] (two fixed prompts as the
model's tokenizer encodes them, BOS included where the tokenizer adds it, cut to T tokens),
`logit_ids` int32 [K] (the union of the top-32 ids at every position and 256 ids drawn with
numpy.random.default_rng(0) from the vocabulary, sorted), `logits` float32 [P, T, K] (transformers,
float32, loading the same GGUF with `gguf_file=`, causal, no padding) and `max_abs_logit` (over
the full vocabulary); `NAME.json` holds the ~20 fixture texts, their full tokenization
(`token_ids`, for tokenizer parity), the reference's version, the GGUF's sha256, the special ids
and the config transformers built from the GGUF. `embeddinggemma-300m.npz` holds
sentence-transformers' `query_embeddings` and `doc_embeddings` (encode_query / encode_document
with the model's own prompts; the model normalizes them), its `.json` the texts, prompts and the
token ids the model saw. Everything stays well under 1.5 MB.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.files import atomic_write_bytes, atomic_write_text  # noqa: E402
from irjax.models.weights_dir import weights_dir  # noqa: E402

REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
OUTPUT = ROOT / "tests" / "fixtures" / "lm"
GGUF_MODELS = ("smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct")
OPTIONAL_MODELS = ("qwen2.5-coder-1.5b-instruct",)  # 6 GB in float32: asked for by name
EMBEDDING_MODEL = "embeddinggemma-300m"
PROMPT_LENGTH = 12  # T
TOP_K = 32
RANDOM_IDS = 256
SEED = 0
NUM_QUERIES = 4  # SciFact test queries (and their first relevant documents) for EmbeddingGemma
DOC_WORDS = 48  # documents are cut to this many words, to keep the parity tests quick

# Fixed texts around the SciFact lines read at run time: English, digits and numbers,
# punctuation, accents (composed and decomposed), leading/trailing/repeated spaces, tabs and
# newlines, emoji, other scripts, code, URLs and the chat markers some vocabularies hold whole.
FIXED_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Dense retrieval ranks documents by the inner product of query and passage vectors.",
    "In 2023, 1,234 patients (95% CI: 0.82–1.17; p<0.001) were enrolled across 17 sites.",
    "Values: 3.14159, 2.71828, 1e-10, -273.15 °C, 6.022×10^23 mol⁻¹, $1,000,000.",
    "12345678901234567890",
    "Hello, world! What's up? It's 5 o'clock; they're here... (really?) [yes] {no}",
    "Café déjà vu: naïve coöperation in São Paulo and Zürich.",
    "Cafe\u0301 with a decomposed accent",
    " one leading space",
    "   three leading spaces, a  double space and trailing ones   ",
    "Emoji test 🙂🚀👍🏽 with symbols: ©®™ ±×÷ ∑∫√ ≤≥≠.",
    "東京は日本の首都です。 Привет, как дела? مرحبا بالعالم",
    "def f(x):\n    return x ** 2  # code\n\ttabbed line\n\n",
    "https://example.org/path?query=1&lang=en#section user@example.com",
    "<|im_start|>user\nWhat is BRCA1?<|im_end|>",
    "<start_of_turn>user\nWhat is BRCA1?<end_of_turn>",
]
# Which texts (indexes into the final list) are the P=2 logit prompts: one plain English
# sentence and the first sentence of the first SciFact document.
PROMPT_TEXTS = (1, len(FIXED_TEXTS) + NUM_QUERIES)


def ensure_reference_python() -> None:
    """Re-executes this script under .venv-ref unless torch and transformers are importable."""
    try:
        import gguf  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        if not REF_PYTHON.exists():
            sys.exit(f"{REF_PYTHON} does not exist; run `python tools/make_reference_vectors.py "
                     "--setup` first")
        os.execv(str(REF_PYTHON), [str(REF_PYTHON), __file__] + sys.argv[1:])


def read_jsonl(path: Path) -> dict[str, dict]:
    with path.open(encoding="utf-8") as f:
        return {row["_id"]: row for row in map(json.loads, f)}


def scifact(data_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """The first NUM_QUERIES test queries (qrels order), the first relevant document of each
    (title and the start of the abstract) and their ids."""
    root = data_dir / "scifact"
    queries, corpus = read_jsonl(root / "queries.jsonl"), read_jsonl(root / "corpus.jsonl")
    pairs: list[tuple[str, str]] = []
    with (root / "qrels" / "test.tsv").open() as f:
        next(f)
        for line in f:
            query_id, doc_id, _ = line.split("\t")
            if query_id not in {q for q, _ in pairs}:
                pairs.append((query_id, doc_id))
            if len(pairs) == NUM_QUERIES:
                break
    query_texts = [queries[q]["text"] for q, _ in pairs]
    docs = []
    for _, doc_id in pairs:
        words = corpus[doc_id]["text"].split()[:DOC_WORDS]
        docs.append(f"{corpus[doc_id]['title']} {' '.join(words)}")
    return query_texts, docs, [f"{q}->{d}" for q, d in pairs]


def fixture_texts(queries: list[str], docs: list[str]) -> list[str]:
    """FIXED_TEXTS, then the SciFact queries and the first sentence of two documents."""
    sentences = [doc.split(". ")[0] for doc in docs[:2]]
    return FIXED_TEXTS + queries + sentences


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_npz(path: Path, **arrays) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def gguf_reference(name: str, texts: list[str], output: Path) -> None:
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = weights_dir(name)
    gguf = directory / "model.gguf"
    print(f"{name}: tokenizer", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf.name)
    token_ids = [tokenizer(text)["input_ids"] for text in texts]
    prompts = []
    for index in PROMPT_TEXTS:
        ids = token_ids[index]
        if len(ids) < PROMPT_LENGTH:
            raise SystemExit(f"{name}: prompt text {index} has only {len(ids)} tokens")
        prompts.append(ids[:PROMPT_LENGTH])
    input_ids = np.asarray(prompts, np.int32)

    print(f"{name}: model (dequantizing to float32)", flush=True)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=gguf.name,
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(input_ids.astype(np.int64))).logits
    logits = logits.float().numpy()
    vocab = logits.shape[-1]
    top = np.argsort(-logits, axis=-1)[..., :TOP_K].reshape(-1)
    drawn = np.random.default_rng(SEED).choice(vocab, size=RANDOM_IDS, replace=False)
    logit_ids = np.unique(np.concatenate([top, drawn])).astype(np.int32)
    config = model.config.to_dict()
    del model

    output.mkdir(parents=True, exist_ok=True)
    write_npz(output / f"{name}.npz", input_ids=input_ids, logit_ids=logit_ids,
              logits=logits[..., logit_ids].astype(np.float32),
              max_abs_logit=np.float32(np.abs(logits).max()))
    record = {
        "texts": texts,
        "reference": f"transformers {transformers.__version__}",
        "torch": torch.__version__,
        "gguf_sha256": sha256_of(gguf),
        "token_ids": token_ids,
        "prompt_texts": list(PROMPT_TEXTS),
        "prompt_length": PROMPT_LENGTH,
        "top_k": TOP_K, "random_ids": RANDOM_IDS, "seed": SEED, "vocab_size": int(vocab),
        "special_ids": {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
                        "pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id},
        "reference_config": json.loads(json.dumps(config, default=str)),
    }
    atomic_write_text(output / f"{name}.json", json.dumps(record, ensure_ascii=False, indent=1))
    top1 = [tokenizer.convert_ids_to_tokens(int(i)) for i in logits[:, -1].argmax(-1)]
    print(f"{name}: wrote {output}/{name}.npz/.json: K={len(logit_ids)}, max |logit| "
          f"{np.abs(logits).max():.2f}, next-token argmax after the prompts {top1}", flush=True)


def embedding_reference(queries: list[str], docs: list[str], pair_ids: list[str],
                        output: Path) -> None:
    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(SEED)
    model = SentenceTransformer(str(weights_dir(EMBEDDING_MODEL)), device="cpu")
    prompts = {"query": model.prompts["query"], "document": model.prompts["document"]}
    query_embeddings = model.encode_query(queries, convert_to_numpy=True)
    doc_embeddings = model.encode_document(docs, convert_to_numpy=True)
    tokenize = lambda texts: model.tokenizer(texts)["input_ids"]  # noqa: E731
    output.mkdir(parents=True, exist_ok=True)
    write_npz(output / f"{EMBEDDING_MODEL}.npz",
              query_embeddings=query_embeddings.astype(np.float32),
              doc_embeddings=doc_embeddings.astype(np.float32))
    record = {
        "queries": queries, "documents": docs, "scifact_pairs": pair_ids,
        "prompts": prompts,
        "query_token_ids": tokenize([prompts["query"] + q for q in queries]),
        "doc_token_ids": tokenize([prompts["document"] + d for d in docs]),
        "reference": f"sentence-transformers {sentence_transformers.__version__}",
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "modules": [type(m).__name__ for m in model],
    }
    atomic_write_text(output / f"{EMBEDDING_MODEL}.json",
                      json.dumps(record, ensure_ascii=False, indent=1))
    scores = query_embeddings @ doc_embeddings.T
    print(f"{EMBEDDING_MODEL}: wrote {output}: norms {np.linalg.norm(query_embeddings, axis=1)}, "
          f"each query's own document ranked first: {bool((scores.argmax(1) == np.arange(len(queries))).all())}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=", ".join(
        GGUF_MODELS + OPTIONAL_MODELS + (EMBEDDING_MODEL,)) + " (default: all but the optional)")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("IRJAX_DATA_DIR", ROOT.parent / "shared" / "data")))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    names = args.names or list(GGUF_MODELS) + [EMBEDDING_MODEL]
    unknown = set(names) - set(GGUF_MODELS + OPTIONAL_MODELS + (EMBEDDING_MODEL,))
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}")
    ensure_reference_python()
    queries, docs, pair_ids = scifact(args.data_dir)
    texts = fixture_texts(queries, docs)
    for name in names:
        if name == EMBEDDING_MODEL:
            embedding_reference(queries, docs, pair_ids, args.output)
        else:
            gguf_reference(name, texts, args.output)


if __name__ == "__main__":
    main()
