"""Errors the user can fix, told apart from bugs so the entry point can treat them differently.

A `UserError` is raised when the cause lies outside irjax's code -- a malformed collection or
input file, a config that contradicts itself or its workdir, a damaged index or checkpoint, weights
or assets that are not installed, a failed download, a loss that diverged under the chosen learning
rate -- and its message alone says what is wrong and how to fix it (the file and line, the setting,
the command to run). `python -m irjax.main` prints such errors as one message on stderr and exits
with status 2: a traceback through gin's wrappers and irjax's internals would only bury the one line
that matters. Every other exception is treated as a bug and keeps its traceback.

Each subclass also keeps the built-in base callers already catch (`except ValueError`,
`except FileNotFoundError`), so marking an error as the user's changes no `except` clause.
Argument checks that guard library calls from other code (`k must be >= 1`) stay plain
ValueError/TypeError: from a config they are still reported, with a traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input, config or environment; the message says how to fix it."""


class ConfigError(ValueError, UserError):
    """A job's settings contradict each other or what an earlier run left in its workdir."""


class InputFileError(ValueError, UserError):
    """A file the user supplied (a run, qrels, teacher scores, pseudo-queries, weights) is
    malformed or unreadable; the message starts with the file (and line) to fix."""


class MissingFileError(FileNotFoundError, UserError):
    """A file or folder named by the config or the environment does not exist; the message says
    what was expected there and how to provide it."""
