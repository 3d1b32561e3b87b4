"""Inference FLOPs of a decoder LM (what rerankers report per query): the matmul weights equal the
layer kernels DecoderLM actually initialises, and splitting a pass at a cache boundary does not
change the total (attention pairs counted causally, capped in sliding layers)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.compute_budget import (decoder_forward_flops, decoder_matmul_params,
                                         generation_flops)
from irjax.models.decoder_lm import DecoderConfig, DecoderLM
from irjax.models.lm_import import config_from_hf
from tests.helpers.tiny_lm import LLAMA

TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_layers=3, num_heads=4,
            num_kv_heads=2, head_dim=16)


@pytest.mark.parametrize("config", [DecoderConfig.qwen2(**TINY),
                                    DecoderConfig.gemma3(**TINY, sliding_window=4,
                                                         sliding_window_pattern=3)])
def test_matmul_params_are_the_layer_kernels(config):
    variables = jax.eval_shape(DecoderLM(config).init, jax.random.key(0),
                               jnp.zeros((1, 4), jnp.int32))
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
               if "kernel" in jax.tree_util.keystr(path) and "layer_" in jax.tree_util.keystr(path)]
    assert decoder_matmul_params(config) == sum(int(np.prod(k.shape)) for k in kernels)


def test_forward_flops_split_at_a_cache_boundary_add_up():
    full = DecoderConfig.llama(**TINY)
    sliding = DecoderConfig.gemma3(**TINY, sliding_window=4, sliding_window_pattern=3)
    for config in (full, sliding):
        whole = decoder_forward_flops(config, 30, 0, 1)
        split = decoder_forward_flops(config, 21, 0, 0) + decoder_forward_flops(config, 9, 21, 1)
        assert whole == pytest.approx(split)
    # attention: 4 x heads x head_dim per visible (query, key) pair and layer
    pairs = 30 * 31 / 2
    expected = (2 * decoder_matmul_params(full) * 30 + 2 * 64 * 96
                + 3 * 4 * 4 * 16 * pairs)
    assert decoder_forward_flops(full, 30, 0, 1) == pytest.approx(expected)
    # two of the three Gemma layers see at most 4 keys per query
    capped = sum(min(t + 1, 4) for t in range(30))
    assert decoder_forward_flops(sliding, 30) == pytest.approx(
        2 * decoder_matmul_params(sliding) * 30 + 4 * 4 * 16 * (pairs + 2 * capped))


def test_generation_flops_is_the_forward_pass_with_sampled_positions_projected() -> None:
    config = config_from_hf(LLAMA)
    per_token = decoder_matmul_params(config)
    head = 2 * config.hidden_size * config.vocab_size
    attention_pair = 4 * config.num_layers * config.num_heads * config.head_dim
    assert generation_flops(config, 3, 0) == 2 * per_token * 3 + attention_pair * 6
    assert generation_flops(config, 3, 2) == 2 * per_token * 5 + head * 2 + attention_pair * 15
