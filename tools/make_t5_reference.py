"""Writes tests/fixtures/t5_tiny/reference.npz: what transformers computes for tiny random T5.1.1s.

No weights are committed: each variant's tensors come from `t5_tiny_checkpoint.tensor_values`
(seeded numpy), their names and shapes as transformers saves them are stored in the npz, and the
tests rebuild the safetensors checkpoint from those. irjax's T5 parity tests load it through
`irjax.models.t5_import` and compare with what transformers' own T5ForConditionalGeneration
computed, so the outputs must come from the PyTorch implementation, which irjax never imports. It
lives in the gitignored .venv-ref (see tools/make_reference_vectors.py --setup; this script needs
torch, transformers and safetensors):

    python tools/make_t5_reference.py     # re-runs itself under .venv-ref

Two variants: 'untied' (T5.1.1: separate lm_head, no logit scaling; d_kv * heads != d_model so
every transpose is exercised) and 'tied' (shared input/output embedding with logits scaled by
d_model**-0.5; fewer encoder than decoder layers). reference.npz holds fixed inputs, each
variant's encoder states and logits, and HF's relative-position buckets for a range of offsets.
Everything stays under 300 KB.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
OUTPUT = ROOT / "tests" / "fixtures" / "t5_tiny"

COMMON = dict(vocab_size=128, relative_attention_num_buckets=16, relative_attention_max_distance=24,
              dropout_rate=0.1, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu",
              pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, model_type="t5",
              architectures=["T5ForConditionalGeneration"])
VARIANTS = {
    "untied": dict(d_model=32, d_kv=6, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
                   tie_word_embeddings=False),
    "tied": dict(d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=2, num_heads=4,
                 tie_word_embeddings=True),
}
INPUT_LENGTH, TARGET_LENGTH = 32, 12  # beyond max_distance, so the clipped buckets are used
BUCKET_RANGE = 300


def ensure_reference_python() -> None:
    """Re-executes this script under .venv-ref unless torch and transformers import here."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        if not REF_PYTHON.exists():
            sys.exit(f"{REF_PYTHON} does not exist; run `python tools/make_reference_vectors.py "
                     "--setup` first")
        os.execv(str(REF_PYTHON), [str(REF_PYTHON), __file__] + sys.argv[1:])


def fixed_inputs():
    """Two rows: one full-length input, one padded; EOS-terminated, 0-padded targets."""
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(2, COMMON["vocab_size"], (2, INPUT_LENGTH)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 19:] = 0
    ids[:, -1] = 1
    ids[1, 18] = 1
    ids *= mask
    targets = rng.integers(2, COMMON["vocab_size"], (2, TARGET_LENGTH)).astype(np.int64)
    target_mask = np.ones_like(targets)
    target_mask[1, 7:] = 0
    targets[:, -1] = 1
    targets[1, 6] = 1
    targets *= target_mask
    decoder_ids = np.concatenate([np.zeros((2, 1), np.int64), targets[:, :-1]], axis=1)
    decoder_mask = np.concatenate([np.ones((2, 1), np.int64), target_mask[:, :-1]], axis=1)
    return ids, mask, targets, target_mask, decoder_ids, decoder_mask


def config_for(name: str) -> dict:
    return {**COMMON, **VARIANTS[name]}


def build(name: str):
    """transformers' T5ForConditionalGeneration for a variant, untied where asked (transformers 5
    always ties lm_head at construction and unties only when a checkpoint's lm_head differs)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    values = {k: v for k, v in config_for(name).items() if k not in ("model_type", "architectures")}
    model = T5ForConditionalGeneration(T5Config(**values, attn_implementation="eager"))
    if not VARIANTS[name]["tie_word_embeddings"]:
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    return model.eval()


def saved_tensor_names(model, name: str) -> list[str]:
    """What a safetensors export holds: tied copies of shared.weight left out."""
    names = [k for k in model.state_dict()
             if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")]
    if VARIANTS[name]["tie_word_embeddings"]:
        names.remove("lm_head.weight")
    return names


def load_seeded_values(model, name: str, seed: int) -> tuple[list[str], list[tuple[int, ...]]]:
    """Fills the model with `t5_tiny_checkpoint.tensor_values`, the values the tests regenerate."""
    import torch
    from t5_tiny_checkpoint import checkpoint_tensors

    names = saved_tensor_names(model, name)
    state = model.state_dict()
    shapes = [tuple(state[n].shape) for n in names]
    values = checkpoint_tensors(seed, names, shapes)
    with torch.no_grad():
        for n in names:
            state[n].copy_(torch.from_numpy(values[n]))
        if VARIANTS[name]["tie_word_embeddings"]:
            assert model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    return names, shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    ensure_reference_python()
    sys.path.insert(0, str(ROOT / "tools"))

    import numpy as np
    import torch
    import transformers
    from transformers.models.t5.modeling_t5 import T5Attention

    ids, mask, targets, target_mask, decoder_ids, decoder_mask = fixed_inputs()
    arrays = {"input_ids": ids, "input_mask": mask, "targets": targets,
              "targets_mask": target_mask, "decoder_input_ids": decoder_ids,
              "decoder_mask": decoder_mask}
    for seed, name in enumerate(VARIANTS):
        model = build(name)
        names, shapes = load_seeded_values(model, name, seed)
        arrays[f"{name}_seed"] = np.array(seed)
        arrays[f"{name}_tensor_names"] = np.array(names)
        arrays[f"{name}_tensor_shapes"] = np.array(json.dumps(shapes))
        arrays[f"{name}_config"] = np.array(json.dumps(config_for(name)))
        with torch.no_grad():
            out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        decoder_input_ids=torch.tensor(decoder_ids),
                        decoder_attention_mask=torch.tensor(decoder_mask))
            shifted = model._shift_right(torch.tensor(targets)).numpy()
        assert (shifted == decoder_ids).all(), "HF shift_right disagrees with the fixture's"
        arrays[f"{name}_encoded"] = out.encoder_last_hidden_state.numpy().astype(np.float32)
        arrays[f"{name}_logits"] = out.logits.numpy().astype(np.float32)

    offsets = torch.arange(-BUCKET_RANGE, BUCKET_RANGE + 1)
    arrays["bucket_offsets"] = offsets.numpy()
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (16, 24)):
            key = f"buckets_{'bi' if bidirectional else 'causal'}_{buckets}_{distance}"
            arrays[key] = T5Attention._relative_position_bucket(
                offsets, bidirectional, buckets, distance).numpy()
    arrays["versions"] = np.array([f"torch={torch.__version__}",
                                   f"transformers={transformers.__version__}"])
    args.output.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output / "reference.npz", **arrays)
    total = sum(p.stat().st_size for p in args.output.rglob("*") if p.is_file())
    print(f"wrote {args.output} ({total / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
