"""Hugging Face safetensors import: layouts, prefixes, and refusal of partial or mismatched files."""
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

from irjax.models.bert import BertConfig
from irjax.models.hf_import import (
    CheckpointMismatchError,
    expected_shapes,
    load_bert_params,
    name_map,
)

TINY = BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=12, max_position_embeddings=16, type_vocab_size=2)


def hf_state(config: BertConfig, prefix: str = "", seed: int = 0) -> dict[str, np.ndarray]:
    """A random state dict named and shaped as transformers' BertModel saves it."""
    rng = np.random.default_rng(seed)
    d, f = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, d),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, d),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, d),
        "embeddings.LayerNorm.weight": (d,),
        "embeddings.LayerNorm.bias": (d,),
    }
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            shapes[f"{p}attention.self.{proj}.weight"] = (d, d)
            shapes[f"{p}attention.self.{proj}.bias"] = (d,)
        shapes.update({
            f"{p}attention.output.dense.weight": (d, d), f"{p}attention.output.dense.bias": (d,),
            f"{p}attention.output.LayerNorm.weight": (d,), f"{p}attention.output.LayerNorm.bias": (d,),
            f"{p}intermediate.dense.weight": (f, d), f"{p}intermediate.dense.bias": (f,),
            f"{p}output.dense.weight": (d, f), f"{p}output.dense.bias": (d,),
            f"{p}output.LayerNorm.weight": (d,), f"{p}output.LayerNorm.bias": (d,),
        })
    state = {prefix + k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    state[prefix + "embeddings.position_ids"] = np.arange(config.max_position_embeddings)[None]
    state[prefix + "pooler.dense.weight"] = rng.normal(size=(d, d)).astype(np.float32)
    state[prefix + "pooler.dense.bias"] = np.zeros(d, np.float32)
    return state


def save(tmp_path, state, name="model.safetensors"):
    path = tmp_path / name
    save_file(state, str(path))
    return path


def test_name_map_covers_every_param_once():
    mapped = [path for path, _ in name_map(TINY).values()]
    assert len(mapped) == len(set(mapped))
    assert set(mapped) == set(expected_shapes(TINY))


def test_layouts_are_transposed_and_split_into_heads(tmp_path):
    state = hf_state(TINY)
    params = load_bert_params(save(tmp_path, state), TINY)
    heads, hd = TINY.num_attention_heads, TINY.head_dim
    x = np.random.default_rng(1).normal(size=(3, TINY.hidden_size)).astype(np.float32)
    q = params["layer_1"]["attention"]["query"]
    torch_q = x @ state["encoder.layer.1.attention.self.query.weight"].T + state["encoder.layer.1.attention.self.query.bias"]
    flax_q = np.einsum("be,ehd->bhd", x, q["kernel"]) + q["bias"]
    np.testing.assert_allclose(flax_q.reshape(3, heads * hd), torch_q, rtol=1e-5, atol=1e-5)
    out = params["layer_0"]["attention"]["out"]
    ctx = np.random.default_rng(2).normal(size=(3, heads, hd)).astype(np.float32)
    torch_out = ctx.reshape(3, -1) @ state["encoder.layer.0.attention.output.dense.weight"].T
    np.testing.assert_allclose(np.einsum("bhd,hde->be", ctx, out["kernel"]), torch_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(params["layer_0"]["wi"]["kernel"], state["encoder.layer.0.intermediate.dense.weight"].T)
    np.testing.assert_array_equal(params["embeddings"]["layer_norm"]["scale"], state["embeddings.LayerNorm.weight"])


def test_bert_prefix_and_gamma_beta_names(tmp_path):
    plain = load_bert_params(save(tmp_path, hf_state(TINY), "a.safetensors"), TINY)
    prefixed_state = hf_state(TINY, prefix="bert.")
    prefixed_state["cls.predictions.bias"] = np.zeros(TINY.vocab_size, np.float32)
    prefixed = load_bert_params(save(tmp_path, prefixed_state, "b.safetensors"), TINY)
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in hf_state(TINY).items()}
    tf_style = load_bert_params(save(tmp_path, old, "c.safetensors"), TINY)
    for other in (prefixed, tf_style):
        a, b = traverse_util.flatten_dict(plain), traverse_util.flatten_dict(other)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_missing_tensor_is_named(tmp_path):
    state = hf_state(TINY)
    del state["encoder.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"missing.*layer_1/wo/kernel") as err:
        load_bert_params(save(tmp_path, state), TINY)
    assert "model.safetensors" in str(err.value)


def test_unexpected_tensor_is_named(tmp_path):
    state = hf_state(TINY)
    state["encoder.layer.2.output.dense.weight"] = np.zeros((8, 12), np.float32)  # a third layer
    with pytest.raises(CheckpointMismatchError, match=r"unexpected.*encoder\.layer\.2\.output\.dense\.weight"):
        load_bert_params(save(tmp_path, state), TINY)


def test_shape_mismatch_is_named(tmp_path):
    wider = BertConfig(**{**TINY.__dict__, "intermediate_size": 16})
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches.*intermediate\.dense\.weight"):
        load_bert_params(save(tmp_path, hf_state(wider)), TINY)


def test_broken_file_and_missing_file(tmp_path):
    broken = tmp_path / "model.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match="cannot read .* as safetensors"):
        load_bert_params(broken, TINY)
    good = save(tmp_path, hf_state(TINY), "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_bert_params(truncated, TINY)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_bert_params(tmp_path / "nowhere.safetensors", TINY)


def test_minilm_checkpoint_fills_every_param():
    from irjax.models.pretrained import find_minilm_dir

    try:
        directory = find_minilm_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    config = BertConfig.from_json(directory)
    params = load_bert_params(directory, config)
    flat = traverse_util.flatten_dict(params)
    assert {k: v.shape for k, v in flat.items()} == expected_shapes(config)
    assert all(v.dtype == np.float32 for v in flat.values())
    assert sum(v.size for v in flat.values()) == config.num_params() == 22_565_376
