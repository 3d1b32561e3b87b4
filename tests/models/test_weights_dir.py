"""irjax/models/weights_dir.py: the cache location, and errors that name the fetch command."""
from pathlib import Path

import pytest

from irjax.models.pretrained import MissingWeightsError
from irjax.models.weights_dir import gguf_path, weights_dir, weights_root


def test_default_and_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("IRJAX_WEIGHTS_DIR", raising=False)
    assert weights_root() == Path.home() / ".cache" / "irjax" / "weights"
    monkeypatch.setenv("IRJAX_WEIGHTS_DIR", str(tmp_path))
    assert weights_dir("gemma3-270m", must_exist=False) == tmp_path / "gemma3-270m"


def test_missing_and_present(monkeypatch, tmp_path):
    monkeypatch.setenv("IRJAX_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="tools/fetch_weights.py smollm2-135m-instruct"):
        gguf_path("smollm2-135m-instruct")
    (tmp_path / "smollm2-135m-instruct").mkdir()
    (tmp_path / "smollm2-135m-instruct" / "model.gguf").write_bytes(b"GGUF")
    assert gguf_path("smollm2-135m-instruct") == tmp_path / "smollm2-135m-instruct" / "model.gguf"


def test_unknown_names_and_kinds():
    with pytest.raises(ValueError, match="unknown weights name 'gemma-7b'"):
        weights_dir("gemma-7b")
    with pytest.raises(ValueError, match="splade-tiny is not a GGUF model"):
        gguf_path("splade-tiny")


@pytest.mark.usefixtures("clean_gin")
def test_configs_can_name_a_model(monkeypatch, tmp_path):
    import gin

    from irjax import gin_config

    monkeypatch.setenv("IRJAX_WEIGHTS_DIR", str(tmp_path))
    gin_config.register_all()
    gin.parse_config("lm/gguf_path.name = 'gemma3-270m'\nlm/gguf_path.must_exist = False\n"
                     "enc/weights_dir.name = 'splade-tiny'\nenc/weights_dir.must_exist = False")
    with gin.config_scope("lm"):
        assert gin.get_configurable("gguf_path")() == tmp_path / "gemma3-270m" / "model.gguf"
    with gin.config_scope("enc"):
        assert gin.get_configurable("weights_dir")() == tmp_path / "splade-tiny"
