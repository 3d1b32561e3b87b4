"""Hugging Face BertForMaskedLM safetensors -> `SpladeEncoder` parameters, and where they live.

The encoder tensors go through hf_import (which checks every name and shape); the MLM head is
mapped here: `cls.predictions.transform.{dense,LayerNorm}` and `cls.predictions.bias`, with the
decoder tied to the word embeddings (a checkpoint whose decoder differs from them is refused,
since `MlmHead` has no untied decoder). A checkpoint without an MLM head (all-MiniLM-L6-v2: a
sentence-transformers encoder) can get a fresh one with `fresh_head=True`: identity transform,
unit LayerNorm, zero bias, so the initial logits are the word embeddings' dot products with the
(normalised) hidden states rather than noise. Those dot products are positive for almost every
term (all-MiniLM-L6-v2 on SciFact: ~30.5k of 30,522 terms per document), so a fresh head can
start from a negative `fresh_head_bias` instead: log1p(ReLU(max + b)) keeps only the terms whose
max logit exceeds -b, which makes the starting vectors sparse without changing their ranking.

Weights are looked up in `$IRJAX_WEIGHTS_DIR/<name>/` (default `~/.cache/irjax/weights/<name>/`),
where `tools/fetch_weights.py <name>` puts them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from irjax.models.bert import BertConfig
from irjax.models.hf_import import canonical_name, convert_state_dict
from irjax.models.pretrained import MissingWeightsError
from irjax.models.weight_import import CheckpointMismatchError, load_safetensors

WEIGHTS_ENV = "IRJAX_WEIGHTS_DIR"
_HEAD = "cls.predictions."


def weights_root() -> Path:
    """$IRJAX_WEIGHTS_DIR, else ~/.cache/irjax/weights."""
    root = os.environ.get(WEIGHTS_ENV)
    return Path(root) if root else Path.home() / ".cache" / "irjax" / "weights"


def find_weights(name_or_dir: str | os.PathLike) -> Path:
    """An existing directory as given, else `weights_root()/<name>`; it must hold config.json,
    model.safetensors and tokenizer.json or vocab.txt."""
    given = Path(name_or_dir)
    directory = given if given.is_dir() else weights_root() / str(name_or_dir)
    missing = [f for f in ("config.json", "model.safetensors") if not (directory / f).is_file()]
    if not (directory / "tokenizer.json").is_file() and not (directory / "vocab.txt").is_file():
        missing.append("tokenizer.json or vocab.txt")
    if missing:
        name = given.name if given.is_dir() else str(name_or_dir)
        raise MissingWeightsError(
            f"{directory} lacks {', '.join(missing)}: weights {name!r} are not installed; run "
            f"`python tools/fetch_weights.py {name}` (or set ${WEIGHTS_ENV} to the folder that "
            f"holds {name}/)")
    return directory.resolve()


def _linear(weight: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(weight.T)


def convert_mlm_state_dict(tensors: dict[str, np.ndarray], config: BertConfig,
                           fresh_head: bool = False,
                           fresh_head_bias: float = 0.0) -> dict[str, Any]:
    """{'encoder': ..., 'mlm_head': ...} from HF tensor names (module docstring).

    `fresh_head_bias`: every vocabulary bias of a fresh head (only with one; 0 = plain tie)."""
    encoder = convert_state_dict(tensors, config)
    head = {canonical_name(k)[len(_HEAD):]: v for k, v in tensors.items()
            if canonical_name(k).startswith(_HEAD)}
    d, v = config.hidden_size, config.vocab_size
    if not head:
        if not fresh_head:
            raise CheckpointMismatchError(
                "the checkpoint has no masked-LM head (cls.predictions.*); pass fresh_head=True "
                "to start one (tied to the word embeddings, zero bias)")
        return {"encoder": encoder, "mlm_head": {
            "transform": {"kernel": np.eye(d, dtype=np.float32), "bias": np.zeros(d, np.float32)},
            "transform_norm": {"scale": np.ones(d, np.float32), "bias": np.zeros(d, np.float32)},
            "bias": np.full(v, fresh_head_bias, np.float32)}}
    if fresh_head_bias != 0.0:
        raise CheckpointMismatchError(
            f"fresh_head_bias={fresh_head_bias} applies only to a fresh head, but the checkpoint "
            "has a masked-LM head (cls.predictions.*); leave fresh_head_bias at 0")
    decoder = head.pop("decoder.weight", None)
    head.pop("decoder.bias", None)  # HF ties decoder.bias to predictions.bias
    table = encoder["embeddings"]["word_embeddings"]["embedding"]
    if decoder is not None and not np.array_equal(decoder, table):
        raise CheckpointMismatchError("cls.predictions.decoder.weight differs from the word "
                                      "embeddings; only tied MLM decoders are supported")
    expected = {"transform.dense.weight": (d, d), "transform.dense.bias": (d,),
                "transform.LayerNorm.weight": (d,), "transform.LayerNorm.bias": (d,),
                "bias": (v,)}
    problems = [f"{_HEAD}{k}: expected {s}, got {None if k not in head else head[k].shape}"
                for k, s in expected.items() if k not in head or head[k].shape != s]
    problems += [f"{_HEAD}{k}: unexpected tensor" for k in head if k not in expected]
    if problems:
        raise CheckpointMismatchError("MLM head mismatch: " + "; ".join(problems))
    f32 = {k: np.asarray(x, np.float32) for k, x in head.items()}
    return {"encoder": encoder, "mlm_head": {
        "transform": {"kernel": _linear(f32["transform.dense.weight"]),
                      "bias": f32["transform.dense.bias"]},
        "transform_norm": {"scale": f32["transform.LayerNorm.weight"],
                           "bias": f32["transform.LayerNorm.bias"]},
        "bias": f32["bias"]}}


def load_splade_params(directory: str | os.PathLike, config: BertConfig | None = None,
                       fresh_head: bool = False,
                       fresh_head_bias: float = 0.0) -> tuple[BertConfig, dict[str, Any]]:
    """(config, params) of the BertForMaskedLM checkpoint in `directory` (a name or a folder)."""
    directory = find_weights(directory)
    config = config or BertConfig.from_json(directory / "config.json")
    path = directory / "model.safetensors"
    try:
        return config, convert_mlm_state_dict(load_safetensors(path), config, fresh_head,
                                              fresh_head_bias)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"{path}: {err}") from None
