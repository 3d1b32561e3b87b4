"""Shared pytest setup: persistent JAX compilation cache and the location of ../shared data."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("IRJAX_DATA_DIR", str(_DEFAULT_DATA))

import jax  # noqa: E402  (after env setup)

jax.config.update("jax_compilation_cache_dir", str(ROOT / ".cache" / "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def data_dir() -> Path:
    return Path(os.environ["IRJAX_DATA_DIR"])


@pytest.fixture
def shared_data() -> Path:
    """The real collections; tests needing them are skipped with a reason when absent."""
    path = data_dir()
    if not (path / "scifact" / "corpus.jsonl").exists():
        pytest.skip(f"real collections not found under {path}; set IRJAX_DATA_DIR")
    return path


@pytest.fixture
def clean_gin():
    """An empty gin config for the test and none left behind: bindings are process-global, so a
    config parsed by one test would otherwise leak into the next. Modules that parse configs use
    it for every test with `pytestmark = pytest.mark.usefixtures("clean_gin")`."""
    import gin

    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture
def memory_bucket(monkeypatch):
    """A fresh `memory://BUCKET` URI: a remote filesystem for the test (tests/helpers/memory_fs.py)."""
    from tests.helpers.memory_fs import serve_memory_scheme

    yield from serve_memory_scheme(monkeypatch)
