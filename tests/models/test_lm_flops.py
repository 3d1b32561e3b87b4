"""lm_flops: the matmul parameters per token are the layers' kernel sizes of a converted
checkpoint (counted here from the parameter tree, not from the config), and the estimate grows
as 2 x params per token plus the vocabulary projection and the attention pairs."""
import jax
import numpy as np
import pytest

from irjax.models.lm_flops import generation_flops, matmul_params_per_token
from irjax.models.lm_import import config_from_hf, convert_state_dict
from tests.helpers.tiny_lm import GEMMA3, LLAMA, QWEN2, random_checkpoint


@pytest.mark.parametrize("cfg", [LLAMA, QWEN2, GEMMA3], ids=["llama", "qwen2", "gemma3"])
def test_matmul_params_are_the_layer_kernels(cfg):
    config = config_from_hf(cfg)
    params = convert_state_dict(random_checkpoint(cfg), config)
    kernels = sum(int(np.prod(v.shape)) for path, v in jax.tree_util.tree_flatten_with_path(params)[0]
                  if jax.tree_util.keystr(path).startswith("['layer_")
                  and jax.tree_util.keystr(path).endswith("['kernel']"))
    assert matmul_params_per_token(config) == kernels


def test_generation_flops_terms():
    config = config_from_hf(LLAMA)
    per_token = matmul_params_per_token(config)
    head = 2 * config.hidden_size * config.vocab_size
    attention_pair = 4 * config.num_layers * config.num_heads * config.head_dim
    assert generation_flops(config, 3, 0) == 2 * per_token * 3 + attention_pair * 6
    assert generation_flops(config, 3, 2) == 2 * per_token * 5 + head * 2 + attention_pair * 15
