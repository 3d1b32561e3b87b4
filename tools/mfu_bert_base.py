"""Model FLOPs utilisation (MFU) of a BERT-base dual-encoder training step in bf16, on one chip.

    python tools/mfu_bert_base.py --out mfu.json [--batch-size 256] [--query-length 32]
        [--doc-length 256] [--steps 30] [--peak-tflops 989]
    python tools/mfu_bert_base.py --smoke --out /tmp/mfu.json    # tiny config, runs on CPU
    python tools/mfu_bert_base.py --out mfu.json --options baseline,unsafe_rbg,flash,flatten,mu_bf16

Each --options step adds one efficiency switch (irjax/models/efficiency.py, OptimizerConfig,
TrainerConfig.prng_impl) on top of the previous ones and is compiled and timed in the same run, so
each switch's contribution reads off one table. On GPU, source launch/gpu_env.sh first (XLA flags).

Why: the CPU benchmark (bench_train.py) says how irjax compares with PyTorch on a laptop-sized
model; this says how close the same training step comes to an accelerator's peak at a size that
fills it. It runs the code real training runs: `DualEncoderModel` (shared towers, mean pooling,
in-batch contrastive loss, dropout on), `OptimizerConfig` (AdamW, clipping, masked decay) and the
jitted, state-donating `Trainer.make_train_step`, with the state built by `Trainer.initial_state`
(random init: no checkpoint). Inputs are random token ids with full masks, so every position is
real work; the batch is put on the device once (real training overlaps that copy with the
previous step through async dispatch).

Precision: matmuls and activations in bfloat16 (DualEncoderModel(dtype=bfloat16)); parameters
and Adam moments stay float32 (BertEncoder's param_dtype; flax casts each weight to bf16 where it
is used), softmax in float32 -- the usual mixed-precision recipe.

FLOPs are counted two ways. Analytic (the MFU numerator): 3x the forward FLOPs of every query and
document, i.e. per token 6 x (matmul params per layer) x layers plus 12 x layers x hidden x length
for attention scores and mixing (irjax.models.bert.flops_per_token); embeddings, norms, softmax
and the B x B score matrix are left out, as is usual. XLA's cost analysis of the compiled step,
when the backend provides one, is printed beside it for comparison only: it counts elementwise
work too, and on GPU it leaves out most matmul FLOPs (on an H200 it read 0.32x the analytic count
at the default shapes and 0.08x at lengths 16/64, where matmuls are an even larger share --
presumably the GEMMs handed to libraries), so it is no MFU numerator.
MFU = analytic FLOPs / median step time / peak, with peak from the table below by device kind
(dense bf16) or --peak-tflops; a bf16 jnp.dot measured in the same run is reported as a second,
achievable ceiling.

Measured on an H200 (jax 0.11.2), defaults: 327 ms/step, 783 pairs/s, 121 TFLOP/s = MFU 12.2%
(20% of the 607 TFLOP/s jnp.dot measured then); dropout off 11.9%; 1024 pairs at lengths 16/64
12.8% -- so neither attention nor dropout is what holds it down.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mfu_common import add_common_arguments, check_options, measure_options  # noqa: E402

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512)
SMOKE = dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=128, max_position_embeddings=64)


def random_batch(rng: Any, vocab: int, b: int, lq: int, ld: int) -> dict:
    import numpy as np

    return {"query_ids": rng.integers(1000 % vocab, vocab, (b, lq), dtype=np.int32),
            "query_mask": np.ones((b, lq), np.int32),
            "pos_ids": rng.integers(1000 % vocab, vocab, (b, ld), dtype=np.int32),
            "pos_mask": np.ones((b, ld), np.int32),
            "labels": np.arange(b, dtype=np.int32), "logit_mask": np.ones((b, b), bool)}


def build(efficiency: dict, args: argparse.Namespace) -> tuple[Any, dict, float, dict]:
    """The dual encoder with these switches, a random batch, and its analytic training FLOPs."""
    import jax.numpy as jnp
    import numpy as np

    from irjax.models.bert import BertConfig, flops_per_token
    from irjax.models.dual_encoder_training import DualEncoderModel
    from irjax.models.efficiency import EncoderEfficiency

    config = BertConfig(**(SMOKE if args.smoke else BERT_BASE))
    b, lq, ld = args.batch_size, args.query_length, args.doc_length
    model = DualEncoderModel(config, dtype=jnp.dtype(args.dtype), dropout=not args.no_dropout,
                             efficiency=EncoderEfficiency(**efficiency))
    host = random_batch(np.random.default_rng(0), config.vocab_size, b, lq, ld)
    flops = 3.0 * b * (lq * flops_per_token(config, lq) + ld * flops_per_token(config, ld))
    info = {"config": dict(vars(config)), "shapes": f"{b} pairs x ({lq} + {ld}) tokens",
            "batch_size": b, "query_length": lq, "doc_length": ld, "tokens_per_step": b * (lq + ld)}
    return model, host, flops, info


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="query-document pairs per step")
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--doc-length", type=int, default=256)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny 2-layer config, batch 4, lengths 8/16, 2 steps: a CPU check")
    args = parser.parse_args()
    check_options(parser, args)
    if args.smoke:
        args.batch_size, args.query_length, args.doc_length = 4, 8, 16
        args.steps, args.warmup, args.matmul_n = 2, 1, 256
    return args


def main() -> None:
    args = parse_args()
    measure_options(args, build, "BERT-base dual encoder")


if __name__ == "__main__":
    main()
