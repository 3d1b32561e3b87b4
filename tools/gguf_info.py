"""Prints what a decoder's importer needs to know about GGUF files: architecture metadata and the
quantization types of their tensors.

    python tools/gguf_info.py                         # every fetched GGUF in the weights cache
    python tools/gguf_info.py path/to/model.gguf --json

Read with the `gguf` package's reader (memory-mapped, nothing is dequantized), so it is quick
even for the 1.5B file. Keys are printed without the architecture prefix (`llama.block_count` is
`block_count`); tokenizer arrays are summarised by their length.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irjax.models.weights_dir import MODEL_FILES, weights_root  # noqa: E402

_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
           "tokenizer.ggml.merges")


def gguf_info(path: Path) -> dict[str, Any]:
    """Architecture metadata (arch-prefixed keys, tokenizer scalars) and tensor type counts."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    arch = reader.fields["general.architecture"].contents()
    info: dict[str, Any] = {"file": str(path), "size_bytes": path.stat().st_size,
                            "general.architecture": arch}
    for key, field in reader.fields.items():
        if key in _ARRAYS:
            info[key] = f"<{len(field.data)} entries>"
        elif key.startswith(f"{arch}.") or (key.startswith("tokenizer.ggml.")) or key in (
                "general.file_type", "general.name", "general.license", "general.size_label"):
            info[key] = field.contents()
    types = collections.Counter(t.tensor_type.name for t in reader.tensors)
    info["tensor_count"] = len(reader.tensors)
    info["tensor_types"] = dict(sorted(types.items()))
    info["tensor_types_by_role"] = _types_by_role(reader)
    info["vocab_size"] = len(reader.fields["tokenizer.ggml.tokens"].data)
    return info


def _types_by_role(reader) -> dict[str, list[str]]:
    """Which quantization each kind of tensor uses (`blk.N.` stripped), for the importer."""
    roles: dict[str, set[str]] = collections.defaultdict(set)
    for tensor in reader.tensors:
        name = tensor.name
        if name.startswith("blk."):
            name = "blk.*." + name.split(".", 2)[2]
        roles[name].add(tensor.tensor_type.name)
    return {name: sorted(kinds) for name, kinds in sorted(roles.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    args = parser.parse_args()
    paths = args.paths or [weights_root() / name / "model.gguf" for name, f in MODEL_FILES.items()
                           if f == "model.gguf" and (weights_root() / name / f).is_file()]
    if not paths:
        print(f"no GGUF files given or fetched under {weights_root()}", file=sys.stderr)
        return 1
    for path in paths:
        info = gguf_info(path)
        if args.json:
            print(json.dumps(info, default=str))
            continue
        print(f"== {path}")
        for key, value in info.items():
            if key != "file":
                print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
