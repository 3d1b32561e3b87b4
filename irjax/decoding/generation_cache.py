"""Generated texts on disk, one JSON file per (model, prompt template, sampling settings), keyed
inside by the input text, so a rerun of a query-time LM method costs no generation.

An entry keeps the texts and what producing them cost (prompt + generated tokens, and its share
of the batch's wall time when it was generated), so a rerun served from the cache still reports
the method's cost rather than zero. The file is rewritten whole through a temporary name and a
rename after every batch: an interrupted run keeps what it finished and never leaves a torn file.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from irjax.files import atomic_write_text
from irjax.paths import AnyPath, as_path

FORMAT = 1


def cache_file_key(parts: Mapping[str, Any]) -> str:
    """A short stable digest of everything that decides the generations except the input."""
    text = json.dumps(dict(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class GenerationCache:
    """`get(input)` / `put(input, entry)` over one file under `directory`; `save()` publishes."""

    def __init__(self, directory: str | AnyPath, parts: Mapping[str, Any]):
        self.parts = {k: parts[k] for k in sorted(parts)}
        self.path = as_path(directory) / f"{cache_file_key(self.parts)}.json"
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                stored = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path} is not valid JSON ({e}); delete it to regenerate "
                                 "its texts") from e
            if stored.get("format") != FORMAT or not isinstance(stored.get("entries"), dict):
                raise ValueError(f"{self.path} is not a format-{FORMAT} generation cache "
                                 "(no 'entries'); delete it to regenerate its texts")
            self.entries = stored["entries"]

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self.entries[key] = entry

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(
            {"format": FORMAT, "parts": self.parts, "entries": self.entries}, indent=1) + "\n")
