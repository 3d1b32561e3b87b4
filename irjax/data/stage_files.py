"""One stage of a resumable multi-stage job: a JSONL output plus a manifest written after it.

A stage writes `NAME.jsonl` atomically, then `NAME.manifest.json` (the settings that produced it,
its row count and sha256). On the next run the stage is skipped when both are there, agree and
were made with the same settings; otherwise:

* output without a manifest: the run died between the two writes, so the stage runs again;
* a manifest whose output is missing or whose sha256/row count differ: the file was damaged or
  edited by hand -- refused with an error naming the file (delete both to recompute), since
  silently recomputing would hide the damage and silently using it would train on it;
* a manifest made with other settings: refused (another WORKDIR, or delete the stage's files),
  because mixing two generators' outputs in one workdir would be unreadable later.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from irjax.errors import ConfigError, InputFileError
from irjax.files import atomic_write_text

log = logging.getLogger(__name__)


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + ".manifest.json")


def _canonical(settings: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(settings, sort_keys=True))


def write_stage(path: Path, rows: Iterable[Mapping[str, Any]], settings: Mapping[str, Any]) -> None:
    """Writes the rows (one JSON object per line), then the manifest; both atomically."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)
    atomic_write_text(manifest_path(path), json.dumps({
        "file": path.name, "rows": text.count("\n"),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "settings": _canonical(settings)}, indent=1, sort_keys=True) + "\n")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; a bad line is reported with its number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputFileError(f"{path}:{lineno}: malformed JSON ({e}); delete {path} and "
                                     f"{manifest_path(path).name} to recompute it") from e
            if not isinstance(row, dict):
                raise InputFileError(f"{path}:{lineno}: expected a JSON object, got "
                                     f"{type(row).__name__}")
            rows.append(row)
    return rows


def load_stage(path: Path, settings: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The stage's rows when its output is complete and valid for `settings`, None when the
    stage has to run (module docstring for what is refused)."""
    manifest = manifest_path(path)
    if not manifest.exists():
        if path.exists():
            log.warning("%s has no manifest (an interrupted run): recomputing it", path)
        return None
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        expected_sha, expected_rows, made_with = meta["sha256"], meta["rows"], meta["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputFileError(f"{manifest}: not a stage manifest ({e}); delete it and {path.name} "
                             "to recompute the stage") from e
    if not path.exists():
        raise InputFileError(f"{path} is missing but its manifest {manifest.name} exists; delete "
                             "the manifest to recompute the stage")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected_sha or data.count(b"\n") != expected_rows:
        raise InputFileError(f"{path} does not match its manifest {manifest.name} (sha256 or row "
                             "count differ): it was damaged or edited; delete both files to "
                             "recompute the stage")
    if made_with != _canonical(settings):
        changed = sorted(k for k in set(made_with) | set(_canonical(settings))
                         if made_with.get(k) != _canonical(settings).get(k))
        raise ConfigError(f"{path} was made with other settings ({', '.join(changed)} differ); "
                          "use another WORKDIR or delete the file and its manifest to recompute")
    return read_rows(path)
