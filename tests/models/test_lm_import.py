"""Decoder-LM import: tiny random checkpoints written as safetensors and as GGUF (llama.cpp's
layout: permuted Llama Q/K rows, Gemma norms stored +1, F32 and Q8_0) give the logits of the
numpy reference; config read from the metadata; mismatches reported tensor by tensor."""
import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from irjax.errors import MissingFileError
from irjax.models.decoder_lm import DecoderLM
from irjax.models.lm_import import (config_from_hf, gguf_to_hf_name, load_gguf, load_hf,
                                    load_lm, to_device, unpermute_rope_rows)
from irjax.models.weight_import import CheckpointMismatchError
from tests.helpers.tiny_lm import (GEMMA3, LLAMA, QWEN2, gguf_tensors, random_checkpoint,
                                   reference_logits, write_gguf)

VARIANTS = {"gemma3": GEMMA3, "llama": LLAMA, "qwen2": QWEN2}
IDS = np.random.default_rng(1).integers(1, 96, (1, 7)).astype(np.int32)


def write_hf(directory, cfg, tensors):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def logits(config, params):
    return np.asarray(DecoderLM(config).apply({"params": params}, jnp.asarray(IDS)))[0]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_safetensors_and_gguf_give_the_reference_logits(tmp_path, variant):
    cfg = VARIANTS[variant]
    tensors = random_checkpoint(cfg, seed=11)
    want = reference_logits(cfg, tensors, IDS[0])
    hf_config, hf_params = load_hf(write_hf(tmp_path / "hf", cfg, tensors))
    write_gguf(tmp_path / "model.gguf", cfg, tensors)
    gguf_config, gguf_params = load_lm(tmp_path / "model.gguf")
    # The metadata gives the same architecture (GGUF keeps eps as a float32).
    assert gguf_config.rms_norm_eps == pytest.approx(hf_config.rms_norm_eps, rel=1e-6)
    assert dataclasses.replace(gguf_config, rms_norm_eps=hf_config.rms_norm_eps) == hf_config
    from_hf, from_gguf = logits(hf_config, hf_params), logits(gguf_config, gguf_params)
    np.testing.assert_allclose(from_hf, want, atol=2e-5 * np.abs(want).max(), rtol=0)
    # Identical up to Gemma's float32 (w + 1) - 1 round trip of the norm weights.
    np.testing.assert_allclose(from_gguf, from_hf, atol=1e-5, rtol=0)
    if variant != "gemma3":
        np.testing.assert_array_equal(from_gguf, from_hf)


def test_gguf_q8_0_is_dequantized_like_the_reader(tmp_path):
    """Q8_0 weights: the imported values are gguf's quantize -> dequantize of the originals
    (close to but not equal to them), and the logits those of the dequantized checkpoint."""
    import gguf

    cfg = LLAMA
    tensors = random_checkpoint(cfg, seed=12)
    write_gguf(tmp_path / "q8.gguf", cfg, tensors, quant="Q8_0")
    reader = gguf.GGUFReader(str(tmp_path / "q8.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.ffn_up.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    config, params = load_gguf(tmp_path / "q8.gguf")
    original = tensors["model.layers.0.mlp.up_proj.weight"]
    roundtrip = gguf.dequantize(gguf.quantize(original, gguf.GGMLQuantizationType.Q8_0),
                                gguf.GGMLQuantizationType.Q8_0)
    imported = params["layer_0"]["mlp"]["up"]["kernel"].T
    np.testing.assert_array_equal(imported, roundtrip)
    assert 0 < np.abs(imported - original).max() < 0.01 * np.abs(original).max()
    # The permuted Q rows too: dequantize, then unpermute.
    dequantized = {n: gguf.dequantize(gguf.quantize(v, gguf.GGMLQuantizationType.Q8_0),
                                      gguf.GGMLQuantizationType.Q8_0) if v.ndim == 2 else v
                   for n, v in gguf_tensors(cfg, tensors).items()}
    q = unpermute_rope_rows(dequantized["blk.1.attn_q.weight"], cfg["num_attention_heads"])
    np.testing.assert_array_equal(params["layer_1"]["attention"]["query"]["kernel"],
                                  q.T.reshape(64, 4, 16))
    hf_named = {n: v for n, v in tensors.items()}
    for name, value in dequantized.items():  # back to HF names, as the reference reads them
        if value.ndim == 2:
            hf = "model." + gguf_to_hf_name(name, "llama") if name != "output.weight" \
                else "lm_head.weight"
            if ".attn_q." in name or ".attn_k." in name:
                heads = cfg["num_attention_heads"] if ".attn_q." in name else \
                    cfg["num_key_value_heads"]
                value = unpermute_rope_rows(value, heads)
            hf_named[hf] = value
    want = reference_logits(cfg, hf_named, IDS[0])
    np.testing.assert_allclose(logits(config, params), want, atol=2e-5 * np.abs(want).max(),
                               rtol=0)


def test_gguf_bfloat16_params(tmp_path):
    cfg = QWEN2
    tensors = random_checkpoint(cfg, seed=13)
    write_gguf(tmp_path / "m.gguf", cfg, tensors)
    _, params = load_gguf(tmp_path / "m.gguf", param_dtype=jnp.bfloat16)
    kernel = params["layer_0"]["attention"]["query"]["bias"]
    assert kernel.dtype == jnp.bfloat16
    np.testing.assert_allclose(kernel.astype(np.float32),
                               tensors["model.layers.0.self_attn.q_proj.bias"].reshape(4, 16),
                               rtol=1e-2)


def test_permutation_inverts_llama_cpp():
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)
    permuted = gguf_tensors(dict(LLAMA, num_attention_heads=2, num_key_value_heads=2),
                            {"model.layers.0.self_attn.q_proj.weight": w})["blk.0.attn_q.weight"]
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(unpermute_rope_rows(permuted, 2), w)


def test_mismatches_are_reported_by_name(tmp_path):
    cfg = QWEN2
    tensors = random_checkpoint(cfg, seed=14)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.0.self_attn.k_proj.weight"] = tensors[
        "model.layers.0.self_attn.k_proj.weight"][:16]
    tensors["model.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointMismatchError) as err:
        load_hf(write_hf(tmp_path / "hf", cfg, tensors))
    message = str(err.value)
    assert "model.safetensors" in message
    assert "layers.1.mlp.up_proj.weight" in message and "missing" in message
    assert "model.extra.weight" in message and "unexpected" in message
    assert "model.layers.0.self_attn.k_proj.weight (16, 64)" in message

    gguf_named = gguf_tensors(cfg, random_checkpoint(cfg, seed=14))
    del gguf_named["blk.0.ffn_gate.weight"]
    write_gguf_raw(tmp_path / "bad.gguf", cfg, gguf_named)
    with pytest.raises(CheckpointMismatchError, match=r"bad\.gguf.*\n.*layers\.0\.mlp\.gate_proj"):
        load_gguf(tmp_path / "bad.gguf")


def write_gguf_raw(path, cfg, named):
    """A GGUF with these (already llama.cpp-named) tensors and cfg's metadata."""
    import gguf

    writer = gguf.GGUFWriter(str(path), cfg["model_type"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    for name, value in named.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_tied_copy_must_equal_the_embedding(tmp_path):
    cfg = QWEN2  # tied
    tensors = random_checkpoint(cfg, seed=15)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    load_hf(write_hf(tmp_path / "same", cfg, tensors))  # an equal copy is accepted
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1
    with pytest.raises(CheckpointMismatchError, match="tied embedding"):
        load_hf(write_hf(tmp_path / "differs", cfg, tensors))


def test_bad_files_and_configs(tmp_path):
    with pytest.raises(MissingFileError, match="config.json"):
        load_hf(tmp_path)
    with pytest.raises(MissingFileError, match="absent.gguf"):
        load_gguf(tmp_path / "absent.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(Exception, match="junk.gguf"):
        load_gguf(tmp_path / "junk.gguf")
    with pytest.raises(ValueError, match="model_type 'bert'"):
        config_from_hf({"model_type": "bert", "vocab_size": 8, "hidden_size": 8,
                        "intermediate_size": 8, "num_hidden_layers": 1,
                        "num_attention_heads": 2})
    with pytest.raises(ValueError, match="llama3"):
        config_from_hf({**LLAMA, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    named = gguf_tensors(LLAMA, random_checkpoint(LLAMA, seed=16))
    write_gguf_raw(tmp_path / "llama3.gguf", LLAMA,
                   {**named, "rope_freqs.weight": np.ones(8, np.float32)})
    with pytest.raises(ValueError, match="rope_freqs"):  # never silently ignored
        load_gguf(tmp_path / "llama3.gguf")


def test_gguf_params_own_their_memory_and_move_to_the_device(tmp_path):
    """The lazy GGUF import gives writable arrays that share no memory with the memory-mapped
    file (F32 tensors come back as views of it) or with each other; to_device moves every leaf
    unchanged and empties the numpy tree."""
    import jax

    cfg = LLAMA
    write_gguf(tmp_path / "m.gguf", cfg, random_checkpoint(cfg, seed=14))
    _, params = load_gguf(tmp_path / "m.gguf")
    leaves = jax.tree.leaves(params)
    assert all(isinstance(x, np.ndarray) and x.flags.writeable and x.flags.owndata or
               x.base is not None and not isinstance(x.base, np.memmap) for x in leaves)
    assert not any(np.may_share_memory(a, b) for i, a in enumerate(leaves) for b in leaves[i + 1:])
    copies = jax.tree.map(np.copy, params)
    moved = to_device(params)
    assert params == {} and all(isinstance(x, jax.Array) for x in jax.tree.leaves(moved))
    jax.tree.map(np.testing.assert_array_equal, moved, copies)
