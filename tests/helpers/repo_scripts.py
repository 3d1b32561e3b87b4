"""Imports of the checkout's scripts that are not packages: launch/*.py and tools/*.py.

Loaded from their paths with importlib (never by putting launch/ or tools/ on sys.path, which
would let any of their module names shadow a real package for the rest of the session). Each is
registered in sys.modules under its file name, which dataclasses need, and loaded once.
"""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.helpers import ROOT


def load_script(relative_path: str) -> ModuleType:
    """The module at ROOT/relative_path, e.g. 'tools/scaling_study.py'."""
    path = ROOT / relative_path
    name = path.stem
    module = sys.modules.get(name)
    if module is not None:
        if getattr(module, "__file__", None) != str(path):
            raise ImportError(f"a module named {name!r} is already loaded from {module.__file__}, "
                              f"not {path}")
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_launcher() -> ModuleType:
    """launch/local_multiprocess.py: N local processes over gloo."""
    return load_script("launch/local_multiprocess.py")


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py."""
    return load_script(f"tools/{name}.py")
