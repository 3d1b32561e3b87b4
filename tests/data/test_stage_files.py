"""Resumable stages: a valid output is reused, an interrupted one recomputed, a damaged one or
one made with other settings refused with an error naming the file."""
import pytest

from irjax.data.stage_files import load_stage, manifest_path, write_stage
from irjax.errors import ConfigError, InputFileError

ROWS = [{"doc_id": "d1", "query": "q one", "kept": True}, {"doc_id": "d2", "query": "q2", "kept": False}]
SETTINGS = {"lm": "tiny", "sampling": {"temperature": 0.7}}


def test_valid_output_is_reused(tmp_path):
    path = tmp_path / "filtered.jsonl"
    assert load_stage(path, SETTINGS) is None
    write_stage(path, ROWS, SETTINGS)
    assert manifest_path(path).name == "filtered.manifest.json"
    assert load_stage(path, dict(reversed(list(SETTINGS.items())))) == ROWS  # key order irrelevant


def test_output_without_manifest_is_recomputed(tmp_path):
    path = tmp_path / "generated.jsonl"
    path.write_text('{"doc_id": "d1"}\n')
    assert load_stage(path, SETTINGS) is None


def test_damaged_output_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "generated.jsonl"
    write_stage(path, ROWS, SETTINGS)
    path.write_text(path.read_text().replace("q one", "q 1"))
    with pytest.raises(InputFileError, match=r"generated\.jsonl does not match its manifest"):
        load_stage(path, SETTINGS)
    path.write_text(path.read_text()[:-10])  # truncated
    with pytest.raises(InputFileError, match="delete both files"):
        load_stage(path, SETTINGS)
    path.unlink()
    with pytest.raises(InputFileError, match="is missing but its manifest"):
        load_stage(path, SETTINGS)


def test_other_settings_are_refused(tmp_path):
    path = tmp_path / "generated.jsonl"
    write_stage(path, ROWS, SETTINGS)
    with pytest.raises(ConfigError, match=r"other settings \(sampling differ\)"):
        load_stage(path, {**SETTINGS, "sampling": {"temperature": 1.0}})
