"""A fine-tuned dual encoder read back from a train_dual_encoder run's checkpoints, and the dense
retriever over it: what DSI warm starts from, and what configs put in front of a reranker
(`RerankingRetriever.first_stage = @trained_dense_retriever()`). It lives with the jobs because
reading a checkpoint is the training machinery's business (only jobs may use it)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from irjax.data.tokenization import WordPieceTokenizer
from irjax.errors import ConfigError, MissingFileError
from irjax.models.bert import BertConfig
from irjax.models.dual_encoder_training import DualEncoderModel
from irjax.models.pretrained import load_checkpoint
from irjax.retrieval.dense import DenseRetriever, dual_encoder_retriever
from irjax.training.checkpoints import read_trained_params

log = logging.getLogger(__name__)

EMBEDDING_MAX_LENGTH = 256  # what train_dual_encoder evaluates with (its eval_max_length)


@dataclasses.dataclass(frozen=True)
class DualEncoder:
    """A fine-tuned dual encoder read from a train_dual_encoder run."""

    model: DualEncoderModel
    params: Any
    tokenizer: WordPieceTokenizer
    name: str
    step: int
    checkpoint: Path

    def retriever(self, cache_dir: str | None = None, warm_queries: bool = False,
                  index: str = "exact") -> DenseRetriever:
        retriever = dual_encoder_retriever(self.model, self.params, self.tokenizer, self.name,
                                           EMBEDDING_MAX_LENGTH, index=index,
                                           cache_dir=cache_dir)
        retriever.warm_queries = warm_queries
        return retriever

    @property
    def encoder_params(self) -> Any:
        return self.model.tower(self.params, "query")


def checkpoint_directory(path: str | Path) -> Path:
    """A run's checkpoint directory: `path` itself, or `path`/checkpoints for a run's workdir."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if not path.is_dir():
        raise MissingFileError(f"dual encoder checkpoint {path} does not exist; train one first "
                               "(gin/train/minilm_scifact.gin) and pass its WORKDIR/checkpoints")
    return path


def load_dual_encoder(path: str | Path, pretrained: str | None = None) -> DualEncoder:
    """The newest step of a train_dual_encoder run (read-only), with the pretrained checkpoint's
    architecture, pooling and tokenizer (the run fine-tuned that checkpoint)."""
    directory = checkpoint_directory(path)
    step, params = read_trained_params(directory)
    if set(params) not in ({"encoder"}, {"query_encoder", "doc_encoder"}):
        raise ConfigError(f"{directory} holds params {sorted(params)}, not a dual encoder's "
                          "('encoder', or 'query_encoder' and 'doc_encoder')")
    checkpoint = load_checkpoint(pretrained)
    config = BertConfig.from_json(checkpoint.config_path)
    model = DualEncoderModel(config, shared_towers="encoder" in params, pooling=checkpoint.pooling)
    log.info("dual encoder: %s, step %d", directory, step)
    return DualEncoder(model, params, WordPieceTokenizer(checkpoint.directory),
                       f"{checkpoint.name}-finetuned", step, directory)


def trained_dense_retriever(checkpoints: str, index: str = "exact", pretrained: str | None = None,
                            cache_dir: str | None = None) -> DenseRetriever:
    """The dense retriever of a train_dual_encoder (or train_ar2) run: `checkpoints` is its
    WORKDIR or WORKDIR/checkpoints; its corpus vectors are cached like any dense retriever's
    (keyed by the parameter values, so another step never reuses them)."""
    return load_dual_encoder(checkpoints, pretrained).retriever(cache_dir, index=index)
