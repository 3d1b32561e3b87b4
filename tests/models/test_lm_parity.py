"""Real GGUF models against transformers (maxtext's *_vs_reference style): irjax's logits for the
fixture prompts, by the full forward pass and by the key/value cache, equal the reference logits
stored in tests/fixtures/lm/<name>.npz (made by tools/make_lm_reference.py from the same GGUF).

Skipped, naming what is missing, when the weights (tools/fetch_weights.py NAME) or the fixture
are absent. tools/lm_parity.py compares the full vocabulary live instead.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irjax.files import sha256_file
from irjax.models.decoder_lm import DecoderLM, init_cache
from irjax.models.lm_import import load_gguf
from tests.helpers.lm_fixtures import weights_and_fixture

MODELS = ("smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct",
          "qwen2.5-coder-1.5b-instruct")
# Allowed |irjax - reference| as a fraction of the largest reference logit: float32 on both
# sides, differences come from summation order only (measured: 1.3e-4 on logits up to 41, i.e.
# 3e-6 relative, tools/results/lm_parity/parity.json).
RELATIVE_TOLERANCE = 2e-5


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_reference(name):
    directory, ref, facts = weights_and_fixture(name, "model.gguf")
    gguf = directory / "model.gguf"
    expected_sha = facts["gguf_sha256"]
    assert sha256_file(gguf) == expected_sha, (
        f"{gguf} is not the file the fixture was made from (sha256 {expected_sha}); fetch it "
        "again with tools/fetch_weights.py")
    ids, keep, want = ref["input_ids"], ref["logit_ids"], ref["logits"]
    tolerance = RELATIVE_TOLERANCE * float(ref["max_abs_logit"])

    config, params = load_gguf(gguf)
    model = DecoderLM(config)
    full = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x))(params, jnp.asarray(ids)))
    np.testing.assert_allclose(full[..., keep], want, atol=tolerance, rtol=0)
    assert (full[..., keep].argmax(-1) == want.argmax(-1)).all()

    # The cache path: half the prompt at once, then one token per step.
    extend = jax.jit(lambda p, x, c: model.apply({"params": p}, x, c, method=DecoderLM.extend))
    half = ids.shape[1] // 2
    logits, cache = extend(params, jnp.asarray(ids[:, :half]), init_cache(config, len(ids),
                                                                          ids.shape[1]))
    steps = [np.asarray(logits)]
    for t in range(half, ids.shape[1]):
        logits, cache = extend(params, jnp.asarray(ids[:, t:t + 1]), cache)
        steps.append(np.asarray(logits))
    cached = np.concatenate(steps, axis=1)[..., keep]
    np.testing.assert_allclose(cached, want, atol=tolerance, rtol=0)
