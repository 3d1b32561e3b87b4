"""Which errors count as the user's: every user-facing class is a UserError and keeps its old base,
so `python -m irjax.main` can print it without a traceback and existing `except` clauses still work."""
import pytest

from irjax.data.collection import CollectionError
from irjax.data.docids.base import DocidError
from irjax.data.resolve import DatasetDownloadError, DatasetNotFoundError
from irjax.errors import ConfigError, InputFileError, MissingFileError, UserError
from irjax.gin_config import GinConfigError
from irjax.index.base import IndexIntegrityError
from irjax.index.docid_trie import TrieFormatError
from irjax.models.hf_import import CheckpointMismatchError
from irjax.models.pretrained import MissingWeightsError
from irjax.training.checkpoints import CheckpointRestoreError, CorruptCheckpointError
from irjax.training.nan_guard import NonFiniteLossError

USER_ERRORS = [
    (ConfigError, ValueError), (InputFileError, ValueError), (MissingFileError, FileNotFoundError),
    (CollectionError, ValueError), (DocidError, ValueError), (DatasetNotFoundError, FileNotFoundError),
    (DatasetDownloadError, RuntimeError), (GinConfigError, ValueError), (IndexIntegrityError, ValueError),
    (TrieFormatError, ValueError), (CheckpointMismatchError, ValueError),
    (MissingWeightsError, FileNotFoundError), (CheckpointRestoreError, RuntimeError),
    (NonFiniteLossError, FloatingPointError),
]


@pytest.mark.parametrize("cls, base", USER_ERRORS, ids=lambda c: c.__name__)
def test_user_errors_keep_their_builtin_base(cls, base):
    assert issubclass(cls, UserError) and issubclass(cls, base)


def test_file_errors_keep_their_message():
    """OSError subclasses format their arguments specially; one message must stay one message."""
    assert str(MissingFileError("x.jsonl does not exist")) == "x.jsonl does not exist"
    assert str(MissingWeightsError("pip install it")) == "pip install it"


def test_one_steps_corruption_is_not_a_user_error():
    """restore_latest skips a corrupt step; only when none restores does the user get an error."""
    assert not issubclass(CorruptCheckpointError, UserError)
