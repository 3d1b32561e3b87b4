"""What every BERT-based training job opens first: its workdir, the pretrained checkpoint (config
and WordPiece tokenizer) and the train and evaluation splits. One place, so the dual-encoder,
multi-vector, cross-encoder and AR2 jobs cannot drift apart in how they find them."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from irjax.data.collection import Collection
from irjax.data.resolve import open_collection
from irjax.data.tokenization import WordPieceTokenizer
from irjax.models.bert import BertConfig
from irjax.models.pretrained import Checkpoint, load_checkpoint


class BertJobInputs(NamedTuple):
    workdir: Path
    checkpoint: Checkpoint
    config: BertConfig
    tokenizer: WordPieceTokenizer
    train: Collection
    evaluation: Collection


def bert_job_inputs(workdir: str, pretrained: str | None, dataset: str, train_split: str,
                    eval_split: str, data_dir: str | None) -> BertJobInputs:
    checkpoint = load_checkpoint(pretrained)
    return BertJobInputs(Path(workdir), checkpoint, BertConfig.from_json(checkpoint.config_path),
                         WordPieceTokenizer(checkpoint.directory),
                         open_collection(dataset, train_split, data_dir),
                         open_collection(dataset, eval_split, data_dir))
