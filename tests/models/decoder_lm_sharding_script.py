"""DecoderLM on a (data=2, model=2) mesh of simulated devices against the same params unsharded:
logits of the full pass and of a cached decoding step; prints one RESULT json line.
Run by tests/models/test_decoder_lm_sharding.py under XLA_FLAGS=...device_count=4."""
import json

import jax
import jax.numpy as jnp
import numpy as np

from irjax.models.decoder_lm import DecoderLM, init_cache
from irjax.models.lm_import import config_from_hf
from irjax.parallel.partitioning import DEFAULT_RULES, create_mesh, init_sharded, \
    with_sharding_rules
from tests.helpers.tiny_lm import GEMMA3, QWEN2


def run(cfg: dict) -> dict:
    config = config_from_hf(cfg)
    model = DecoderLM(config)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 96, (4, 8)), jnp.int32)
    mesh = create_mesh(data=2, model=2)
    params, shardings = init_sharded(lambda key: model.init(key, ids)["params"], mesh,
                                     DEFAULT_RULES, jax.random.key(0))

    def forward(p, x):
        logits = model.apply({"params": p}, x)
        step, _ = model.apply({"params": p}, x, init_cache(config, 4, 8), method=DecoderLM.extend)
        return logits, step

    with with_sharding_rules(mesh, DEFAULT_RULES):
        sharded = jax.jit(forward)(params, ids)
    local = jax.tree.map(lambda x: jax.device_put(np.asarray(x), jax.devices()[0]), params)
    reference = jax.jit(forward)(local, ids)
    specs = {jax.tree_util.keystr(k): str(s.spec)
             for k, s in jax.tree_util.tree_leaves_with_path(shardings)}
    return {"devices": len(jax.devices()), "specs": specs,
            "diff": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                        for a, b in zip(sharded, reference)),
            "scale": float(np.abs(np.asarray(reference[0])).max())}


if __name__ == "__main__":
    print("RESULT " + json.dumps({"gemma3": run(GEMMA3), "qwen2": run(QWEN2)}))
