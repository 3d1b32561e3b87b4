"""Training-FLOP accounting of the scaling study: parameter counts against the real models, the
6 x params x tokens arithmetic, and steps chosen for a budget."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.models.bert import BertConfig, BertEncoder
from irjax.models.t5 import T5, T5Config
from irjax.models.compute_budget import (bert_matmul_params, dsi_step_cost, dual_encoder_step_cost,
                                         steps_for_budget, t5_param_counts)


def _count(variables) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(variables["params"])))


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": True},
                                       {"num_decoder_layers": 3, "d_ff": 48}])
def test_t5_counts_match_the_model(overrides):
    config = T5Config.preset("tiny", vocab_size=300, **overrides)
    ids = jnp.zeros((1, 5), jnp.int32)
    shapes = jax.eval_shape(lambda: T5(config).init(jax.random.PRNGKey(0), ids, ids + 1, ids))
    assert sum(t5_param_counts(config).values()) == _count(shapes)


def test_bert_matmul_params_are_the_layer_weights():
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=16)
    ids = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(lambda: BertEncoder(config).init(jax.random.PRNGKey(0), ids, ids + 1))
    assert _count(shapes) == config.num_params()
    assert bert_matmul_params(config) == 2 * (4 * 32 * 32 + 2 * 32 * 64)


def test_dsi_cost_charges_each_part_with_its_own_tokens():
    config = T5Config.preset("mini", vocab_size=32128 + 128)
    cost = dsi_step_cost(config, batch_size=64, inputs_length=64, targets_length=2)
    counts = t5_param_counts(config)
    expected = 6 * ((counts["encoder"] + counts["cross_kv"]) * 64 * 64
                    + (counts["decoder"] + counts["lm_head"]) * 64 * 2)
    assert cost.flops_per_step == expected
    assert cost.tokens_per_step == 64 * 66
    assert cost.total_params == sum(counts.values()) > cost.matmul_params


def test_dual_encoder_cost_counts_queries_positives_and_negatives():
    config = BertConfig()  # MiniLM-L6-H384
    cost = dual_encoder_step_cost(config, 32, 64, 192, num_hard_negatives=1)
    assert cost.tokens_per_step == 32 * (64 + 2 * 192)
    assert cost.flops_per_step == 6 * bert_matmul_params(config) * cost.tokens_per_step
    separate = dual_encoder_step_cost(config, 32, 64, 192, 1, shared_towers=False)
    assert separate.flops_per_step == cost.flops_per_step
    assert separate.total_params == 2 * cost.total_params


def test_steps_for_budget_lands_within_half_a_step():
    cost = dual_encoder_step_cost(BertConfig(), 8, 16, 32)
    for budget in (cost.flops_per_step * 10.4, cost.flops_per_step * 10.6, 1e15):
        steps = steps_for_budget(budget, cost)
        assert abs(steps * cost.flops_per_step - budget) <= cost.flops_per_step / 2
    assert steps_for_budget(cost.flops_per_step / 10, cost) == 1  # never zero steps
    with pytest.raises(ValueError, match="positive and finite"):
        steps_for_budget(0.0, cost)
