"""T5 and Seq2SeqModel: shapes and axis names, causal decoding, relative position buckets,
padding invariance, and the teacher-forced loss and its metrics."""
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from irjax.models.seq2seq import Seq2SeqModel
from irjax.models.t5 import PRESETS, T5, T5Config, relative_position_bucket, shift_right

TINY = T5Config.preset("tiny", vocab_size=64, relative_attention_num_buckets=8,
                       relative_attention_max_distance=16)
B, LI, LT = 2, 9, 5


def example(seed: int = 0) -> dict[str, jnp.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = rng.integers(2, TINY.vocab_size, (B, LI)).astype(np.int32)
    inputs_mask = (np.arange(LI) < np.array([[LI], [6]])).astype(np.int32)
    targets = rng.integers(2, TINY.vocab_size, (B, LT)).astype(np.int32)
    targets_mask = (np.arange(LT) < np.array([[LT], [3]])).astype(np.int32)
    targets[0, -1], targets[1, 2] = 1, 1  # EOS
    return {"inputs": jnp.asarray(inputs * inputs_mask), "inputs_mask": jnp.asarray(inputs_mask),
            "targets": jnp.asarray(targets * targets_mask),
            "targets_mask": jnp.asarray(targets_mask)}


def init(config: T5Config = TINY):
    module = T5(config)
    batch = example()
    variables = module.init(jax.random.key(0), batch["inputs"], batch["inputs_mask"],
                            shift_right(batch["targets"]))
    return module, nn.unbox(variables["params"]), variables


@jax.jit
def forward(params, inputs, inputs_mask, decoder_ids):
    return T5(TINY).apply({"params": params}, inputs, inputs_mask, decoder_ids)


def test_shapes_and_logical_axis_names():
    module, params, boxed = init()
    batch = example()
    encoded = module.apply({"params": params}, batch["inputs"], batch["inputs_mask"],
                           method="encode")
    assert encoded.shape == (B, LI, TINY.d_model)
    logits = forward(params, batch["inputs"], batch["inputs_mask"], shift_right(batch["targets"]))
    assert logits.shape == (B, LT, TINY.vocab_size) and logits.dtype == jnp.float32
    flat = traverse_util.flatten_dict(boxed["params"])
    assert all(isinstance(v, nn.LogicallyPartitioned) for v in flat.values())
    names = {path: v.names for path, v in flat.items()}
    assert names[("shared", "embedding")] == ("vocab", "embed")
    assert names[("lm_head", "kernel")] == ("embed", "vocab")
    assert names[("encoder", "layer_0", "attention", "query", "kernel")] == ("embed", "heads", "kv")
    assert names[("decoder", "layer_1", "cross_attention", "out", "kernel")] == ("heads", "kv", "embed")
    assert names[("decoder", "layer_0", "mlp", "wi_1", "kernel")] == ("embed", "mlp")
    assert names[("encoder", "relpos_bias", "embedding")] == (None, "heads")
    assert not any("bias" in path[-1] for path in flat)  # T5 has no dense biases
    # one bias table per stack, shared by its layers
    assert sum(path[-2] == "relpos_bias" for path in flat) == 2
    _, tied, _ = init(T5Config.preset("tiny", vocab_size=64, tie_word_embeddings=True))
    assert "lm_head" not in tied


def test_presets_and_hf_config(tmp_path):
    assert set(PRESETS) == {"tiny", "mini", "small", "base"}
    small, base = T5Config.preset("small"), T5Config.preset("base")
    assert (small.d_model, small.d_kv, small.d_ff, small.num_layers, small.num_heads) == (512, 64, 1024, 8, 6)
    assert (base.d_model, base.d_kv, base.d_ff, base.num_layers, base.num_heads) == (768, 64, 2048, 12, 12)
    mini = T5Config.preset("mini")
    assert (mini.d_model, mini.num_layers, mini.num_decoder_layers, mini.num_heads, mini.d_ff) == (256, 4, 4, 4, 1024)
    assert T5Config.preset("tiny").vocab_size == 32128
    with pytest.raises(ValueError, match="unknown T5 preset"):
        T5Config.preset("huge")
    values = {"d_model": 48, "d_kv": 8, "d_ff": 96, "num_layers": 3, "num_decoder_layers": 2,
              "num_heads": 6, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
              "vocab_size": 100, "model_type": "t5", "dropout_rate": 0.0}
    (tmp_path / "config.json").write_text(json.dumps(values))
    config = T5Config.from_hf_json(tmp_path)
    assert (config.num_layers, config.num_decoder_layers, config.tie_word_embeddings) == (3, 2, False)
    (tmp_path / "config.json").write_text(json.dumps({**values, "feed_forward_proj": "relu"}))
    with pytest.raises(ValueError, match="gated-gelu"):
        T5Config.from_hf_json(tmp_path / "config.json")


def test_shift_right():
    targets = jnp.array([[5, 6, 1, 0], [7, 1, 0, 0]])
    np.testing.assert_array_equal(shift_right(targets), [[0, 5, 6, 1], [0, 7, 1, 0]])


def test_decoder_is_causal():
    _, params, _ = init()
    batch = example()
    decoder_ids = shift_right(batch["targets"])
    logits = forward(params, batch["inputs"], batch["inputs_mask"], decoder_ids)
    changed = forward(params, batch["inputs"], batch["inputs_mask"],
                      decoder_ids.at[:, 3].set((decoder_ids[:, 3] + 7) % TINY.vocab_size))
    np.testing.assert_allclose(changed[:, :3], logits[:, :3], atol=1e-6)
    assert np.abs(np.asarray(changed[:, 3:] - logits[:, 3:])).max() > 1e-3


def python_bucket(relative: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """T5's bucketing formula, written out for one integer offset."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        if relative > 0:
            bucket = num_buckets
        distance = abs(relative)
    else:
        distance = max(-relative, 0)
    max_exact = num_buckets // 2
    if distance < max_exact:
        return bucket + distance
    large = max_exact + int(math.log(distance / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact))
    return bucket + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 16), (16, 24)])
def test_relative_position_bucket(bidirectional, num_buckets, max_distance):
    offsets = np.arange(-300, 301)
    ours = np.asarray(relative_position_bucket(jnp.asarray(offsets), bidirectional, num_buckets,
                                               max_distance))
    expected = [python_bucket(int(o), bidirectional, num_buckets, max_distance) for o in offsets]
    np.testing.assert_array_equal(ours, expected)
    assert ours.min() == 0 and ours.max() == num_buckets - 1
    if not bidirectional:
        assert (ours[offsets >= 0] == 0).all()  # the future all looks the same (and is masked)


def test_encoder_ignores_padding():
    module, params, _ = init()
    ids = jnp.asarray(np.random.default_rng(3).integers(2, TINY.vocab_size, (1, 6)), jnp.int32)
    encode = lambda i, m: module.apply({"params": params}, i, m, method="encode")  # noqa: E731
    short = encode(ids, jnp.ones_like(ids))
    padded = jnp.concatenate([ids, jnp.full((1, 20), 9, jnp.int32)], axis=1)  # beyond max_distance
    mask = (jnp.arange(26) < 6).astype(jnp.int32)[None]
    np.testing.assert_allclose(encode(padded, mask)[:, :6], short, atol=1e-5)
    assert np.abs(np.asarray(encode(padded, jnp.ones_like(padded))[:, :6] - short)).max() > 1e-3


def test_greedy_decode_in_jit_matches_teacher_forcing():
    """Docid decoding: a fixed-length padded prefix, filled one position per step inside jit."""
    model = Seq2SeqModel(TINY)
    _, params, _ = init()
    batch = example()

    @jax.jit
    def greedy(params, inputs, inputs_mask):
        encoded = model.encode(params, inputs, inputs_mask)

        def step(prefix, t):
            logits = model.decode(params, encoded, inputs_mask, prefix)
            token = jnp.argmax(logits[:, t], axis=-1).astype(prefix.dtype)
            return prefix.at[:, t + 1].set(token), token

        prefix = jnp.zeros((inputs.shape[0], LT + 1), jnp.int32)
        _, tokens = jax.lax.scan(step, prefix, jnp.arange(LT))
        return tokens.T

    tokens = greedy(params, batch["inputs"], batch["inputs_mask"])
    forced = model.logits(params, {**batch, "targets": tokens})
    np.testing.assert_array_equal(jnp.argmax(forced, axis=-1), tokens)


def test_decode_at_is_one_position_of_decode():
    """What the generative retriever calls per beam-search step: the output layer at one
    (traced) position only, over cross-attention keys and values computed once per query; the
    same logits as the full prefix's at that position."""
    model = Seq2SeqModel(TINY)
    _, params, _ = init()
    batch = example()
    encoded = model.encode(params, batch["inputs"], batch["inputs_mask"])
    prefix = shift_right(batch["targets"])
    full = model.decode(params, encoded, batch["inputs_mask"], prefix)
    at = jax.jit(model.decode_at)
    cross = jax.jit(model.decode_at_cross)
    cross_kv = model.cross_keys_values(params, encoded)
    assert len(cross_kv) == TINY.num_decoder_layers
    for t in range(LT):
        np.testing.assert_allclose(at(params, encoded, batch["inputs_mask"], prefix, jnp.int32(t)),
                                   full[:, t], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cross(params, cross_kv, batch["inputs_mask"], prefix,
                                         jnp.int32(t)), full[:, t], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- Seq2SeqModel


def test_loss_and_metrics():
    model = Seq2SeqModel(TINY)
    batch = example()
    params = nn.unbox(model.init_variables(jax.random.key(0), batch))
    loss, metrics = jax.jit(model.loss)(params, batch, jax.random.key(1))
    logits = np.asarray(model.logits(params, batch), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    token = np.take_along_axis(log_probs, np.asarray(batch["targets"])[..., None], -1)[..., 0]
    w = np.asarray(batch["targets_mask"])
    eval_loss, _ = model.loss(params, batch, None)  # no rng: dropout off
    np.testing.assert_allclose(eval_loss, -(token * w).sum() / w.sum(), rtol=1e-5)
    assert np.isfinite(loss) and abs(float(loss) - float(eval_loss)) > 1e-4  # dropout was on
    assert metrics["target_tokens"] == 8
    np.testing.assert_allclose(model.sequence_log_prob(params, batch), (token * w).sum(-1), rtol=1e-5)

    # Metrics on logits that get exactly the first row right and one token of the second wrong.
    targets = np.asarray(batch["targets"])
    perfect = jax.nn.one_hot(targets, TINY.vocab_size) * 50.0
    perfect = perfect.at[1, 1].set(jax.nn.one_hot((targets[1, 1] + 1) % 64, 64) * 50.0)
    _, m = model.loss_from_logits(perfect, batch)
    np.testing.assert_allclose(m["token_accuracy"], 7 / 8)
    np.testing.assert_allclose(m["sequence_accuracy"], 1 / 2)


def test_loss_is_a_global_token_mean():
    """Rows with few target tokens weigh by their tokens, not as one of B rows: the batch loss
    equals the token-weighted mean of per-row losses, whatever rows a data shard holds."""
    model = Seq2SeqModel(TINY)
    batch = example()
    params = nn.unbox(model.init_variables(jax.random.key(0), batch))
    loss, _ = model.loss(params, batch, None)
    rows = [model.loss(params, {k: v[i:i + 1] for k, v in batch.items()}, None)[0] for i in range(B)]
    tokens = np.asarray(batch["targets_mask"]).sum(-1)
    np.testing.assert_allclose(loss, np.dot(rows, tokens) / tokens.sum(), rtol=1e-5)


def test_label_smoothing_and_z_loss():
    batch = example()
    plain = Seq2SeqModel(TINY)
    params = nn.unbox(plain.init_variables(jax.random.key(0), batch))
    logits = plain.logits(params, batch)
    smooth = Seq2SeqModel(TINY, label_smoothing=0.1)
    ce, _ = smooth.token_losses(logits, batch["targets"])
    s, v = 0.1, TINY.vocab_size
    q = np.full(logits.shape, s / (v - 1))
    np.put_along_axis(q, np.asarray(batch["targets"])[..., None], 1 - s, -1)
    log_p = np.asarray(jax.nn.log_softmax(logits))
    expected = -(q * log_p).sum(-1) + (q * np.log(q)).sum(-1)  # KL(q || p)
    np.testing.assert_allclose(ce, expected, rtol=1e-4, atol=1e-5)
    zl = Seq2SeqModel(TINY, z_loss=1e-2)
    total, metrics = zl.loss(params, batch, None)
    np.testing.assert_allclose(total, metrics["cross_entropy"] + 1e-2 * metrics["z_loss"], rtol=1e-6)
    assert metrics["z_loss"] > 0
    with pytest.raises(ValueError, match="label_smoothing"):
        Seq2SeqModel(TINY, label_smoothing=1.0)


@pytest.mark.parametrize("attention,remat", [("fused", "none"), ("einsum", "full"), ("fused", "dots")])
def test_attention_and_remat_switches_keep_loss_gradients_and_decoding(attention, remat):
    """The T5 efficiency switches (dropout off) give the reference loss and gradients, the same
    parameter tree, and the same logits in the decoding paths beam search uses."""
    import dataclasses

    batch = example(3)
    plain = Seq2SeqModel(TINY, dropout=False)
    switched = Seq2SeqModel(dataclasses.replace(TINY, attention=attention, remat=remat),
                            dropout=False)
    params = nn.unbox(plain.init_variables(jax.random.key(0), batch))
    assert (jax.tree.structure(nn.unbox(switched.init_variables(jax.random.key(0), batch)))
            == jax.tree.structure(params))
    grad = lambda m: jax.value_and_grad(lambda p: m.loss(p, batch, jax.random.key(1))[0])(params)  # noqa: E731
    (loss, grads), (loss2, grads2) = grad(plain), grad(switched)
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads2), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    encoded = plain.encode(params, batch["inputs"], batch["inputs_mask"])
    np.testing.assert_allclose(switched.encode(params, batch["inputs"], batch["inputs_mask"]),
                               encoded, atol=1e-5)
    prefix = shift_right(batch["targets"])
    full = plain.decode(params, encoded, batch["inputs_mask"], prefix)
    cross_kv = switched.cross_keys_values(params, encoded)
    for t in range(LT):  # what beam search calls, on the switched model
        np.testing.assert_allclose(switched.decode_at(params, encoded, batch["inputs_mask"], prefix,
                                                      jnp.int32(t)), full[:, t], atol=1e-5)
        np.testing.assert_allclose(switched.decode_at_cross(params, cross_kv, batch["inputs_mask"],
                                                            prefix, jnp.int32(t)), full[:, t],
                                   atol=1e-5)
