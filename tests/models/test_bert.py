"""BertEncoder: logical axis names, masking, dtypes, and token-level parity with the original
(PyTorch sentence-transformers) MiniLM hidden states stored in the fixture."""
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from irjax.models.bert import BertConfig, BertEncoder, flops_per_token

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.npz"
TINY = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=32, max_position_embeddings=24)


def tiny_init(dtype=jnp.float32, param_dtype=jnp.float32):
    module = BertEncoder(TINY, dtype=dtype, param_dtype=param_dtype)
    ids = jnp.arange(10, dtype=jnp.int32).reshape(2, 5) + 3
    return module, module.init(jax.random.PRNGKey(0), ids, jnp.ones_like(ids)), ids


def test_every_param_carries_logical_axis_names():
    _, variables, _ = tiny_init()
    boxed = traverse_util.flatten_dict(variables["params"])
    assert boxed and all(isinstance(v, nn.LogicallyPartitioned) for v in boxed.values())
    specs = {path: tuple(spec) for path, spec in
             traverse_util.flatten_dict(nn.get_partition_spec(variables)["params"]).items()}
    for path, value in boxed.items():
        assert len(specs[path]) == value.value.ndim, path
    assert specs[("embeddings", "word_embeddings", "embedding")] == ("vocab", "embed")
    assert specs[("layer_0", "attention", "query", "kernel")] == ("embed", "heads", "kv")
    assert specs[("layer_0", "attention", "out", "kernel")] == ("heads", "kv", "embed")
    assert specs[("layer_1", "wi", "kernel")] == ("embed", "mlp")
    assert specs[("layer_1", "wo", "kernel")] == ("mlp", "embed")
    assert specs[("layer_1", "output_norm", "scale")] == ("embed",)
    used = {name for spec in specs.values() for name in spec if name}
    assert used == {"vocab", "embed", "heads", "kv", "mlp"}


def test_activations_are_constrained_under_axis_rules():
    module, variables, ids = tiny_init()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    rules = (("batch", "data"), ("length", None), ("embed", None), ("mlp", None),
             ("heads", None), ("kv", None), ("vocab", None))

    def forward(params, ids):
        return module.apply({"params": params}, ids, jnp.ones_like(ids))

    params = nn.unbox(variables["params"])
    plain = jax.jit(forward).lower(params, ids).as_text()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        constrained = jax.jit(forward).lower(params, ids).as_text()
    assert "sharding_constraint" not in plain  # no rules: constraints are no-ops
    # ids and embeddings, then per layer q, k, v, context, attention out, mlp and layer output
    assert constrained.count("sharding_constraint") == 2 + 2 * 7
    assert '[{"data"}, {}, {}]' in constrained  # 'batch' mapped to the mesh's 'data' axis


def test_padding_does_not_change_real_token_states():
    module, variables, ids = tiny_init()
    mask = jnp.ones_like(ids)
    short = module.apply(variables, ids, mask)
    padded_ids = jnp.concatenate([ids, jnp.full((2, 7), 9, jnp.int32)], axis=1)
    padded_mask = jnp.concatenate([mask, jnp.zeros((2, 7), jnp.int32)], axis=1)
    long = module.apply(variables, padded_ids, padded_mask)
    np.testing.assert_allclose(long[:, :5], short, atol=1e-5)
    # ...while attending to those tokens would change them
    unmasked = module.apply(variables, padded_ids, jnp.ones_like(padded_ids))
    assert np.abs(np.asarray(unmasked[:, :5] - short)).max() > 1e-3


def test_dtype_and_param_dtype():
    module, variables, ids = tiny_init(dtype=jnp.bfloat16, param_dtype=jnp.float32)
    leaves = jax.tree.leaves(nn.unbox(variables["params"]))
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    out = module.apply(variables, ids, jnp.ones_like(ids))
    assert out.dtype == jnp.bfloat16
    reference = BertEncoder(TINY).apply(variables, ids, jnp.ones_like(ids))
    np.testing.assert_allclose(np.asarray(out, np.float32), reference, atol=0.1)
    _, half, _ = tiny_init(param_dtype=jnp.bfloat16)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(nn.unbox(half["params"])))


def test_dropout_only_when_not_deterministic():
    module, variables, ids = tiny_init()
    mask = jnp.ones_like(ids)
    a = module.apply(variables, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    b = module.apply(variables, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
    assert np.abs(np.asarray(a - b)).max() > 1e-3
    np.testing.assert_array_equal(module.apply(variables, ids, mask), module.apply(variables, ids, mask))


def test_config_from_hf_json(tmp_path):
    values = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
              "intermediate_size": 64, "max_position_embeddings": 40, "type_vocab_size": 1,
              "layer_norm_eps": 1e-7, "hidden_act": "gelu", "model_type": "bert", "unknown": 1}
    (tmp_path / "config.json").write_text(json.dumps(values))
    config = BertConfig.from_json(tmp_path)
    assert (config.hidden_size, config.num_hidden_layers, config.head_dim) == (32, 3, 8)
    assert config.layer_norm_eps == 1e-7 and config.type_vocab_size == 1
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig.from_dict({**values, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="not divisible"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    module = BertEncoder(config)
    ids = jnp.ones((1, 41), jnp.int32)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        module.init(jax.random.PRNGKey(0), ids, ids)


def test_num_params_and_flops():
    _, variables, _ = tiny_init()
    count = sum(x.size for x in jax.tree.leaves(nn.unbox(variables["params"])))
    assert TINY.num_params() == count
    d, f = TINY.hidden_size, TINY.intermediate_size
    assert flops_per_token(TINY, 10) == 2 * (2 * (4 * d * d + 2 * d * f) + 4 * 10 * d)


def test_token_states_match_sentence_transformers():
    from irjax.data.tokenization import WordPieceTokenizer
    from irjax.models.hf_import import load_bert_params
    from irjax.models.pretrained import find_minilm_dir

    try:
        directory = find_minilm_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    ref = np.load(FIXTURE)
    config = BertConfig.from_json(directory)
    params = load_bert_params(directory, config)
    text = str(ref["texts"][int(ref["token_text_index"])])
    batch = WordPieceTokenizer(directory).encode([text], 256, pad_to=32)
    hidden = BertEncoder(config).apply({"params": params}, batch.ids, batch.mask)
    expected = ref["token_embeddings"]
    got = np.asarray(hidden[0, : batch.lengths[0]])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)
