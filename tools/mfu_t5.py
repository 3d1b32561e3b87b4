"""Model FLOPs utilisation (MFU) of a T5 training step (DSI / query generation) in bf16, on one chip.

    python tools/mfu_t5.py --out mfu_t5.json [--preset base] [--batch-size 128]
        [--inputs-length 256] [--targets-length 32] [--options baseline,unsafe_rbg,flash,...]
    python tools/mfu_t5.py --smoke --out /tmp/mfu_t5.json     # tiny config, runs on CPU

The T5 counterpart of mfu_bert_base.py (same switches, same table; tools/mfu_common.py): the real
`Seq2SeqModel` (teacher-forced cross-entropy, dropout on) and `Trainer.make_train_step` on random
token ids with full masks. The defaults are query generation's shape (a 256-token passage in, a
32-token query out); DSI with atomic docids is `--targets-length 2 --vocab-size <vocab + docids>`.

Analytic FLOPs (the MFU numerator), 3x the forward: per input token 2 x (4 d h d_kv + 3 d d_ff)
per encoder layer plus 4 h d_kv L_in for attention; per target token 2 x (8 d h d_kv + 3 d d_ff)
per decoder layer plus 4 h d_kv (L_tgt + L_in) for self- and cross-attention, plus 2 d vocab for
the output layer. Norms, softmax, relative-position biases and the loss are left out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mfu_common import add_common_arguments, check_options, measure_options  # noqa: E402


def t5_train_flops(config: Any, batch: int, inputs_length: int, targets_length: int) -> float:
    """3x the forward matmul FLOPs of a teacher-forced T5 step (see the module docstring)."""
    d, h, kv, ff = config.d_model, config.num_heads, config.d_kv, config.d_ff
    encoder = config.num_layers * (2 * (4 * d * h * kv + 3 * d * ff) + 4 * h * kv * inputs_length)
    decoder = config.num_decoder_layers * (2 * (8 * d * h * kv + 3 * d * ff)
                                           + 4 * h * kv * (targets_length + inputs_length))
    output = 2 * d * config.vocab_size
    return 3.0 * batch * (inputs_length * encoder + targets_length * (decoder + output))


def build(efficiency: dict, args: argparse.Namespace) -> tuple[Any, dict, float, dict]:
    import numpy as np

    from irjax.models.seq2seq import Seq2SeqModel
    from irjax.models.t5 import T5Config

    if efficiency.get("grad_cache_tokens"):
        raise SystemExit("GradCache is a dual-encoder option; it has no T5 counterpart")
    config = T5Config.preset(args.preset, vocab_size=args.vocab_size, dtype=args.dtype,
                             attention=efficiency.get("attention", "einsum"),
                             remat=efficiency.get("remat", "none"))
    model = Seq2SeqModel(config, dropout=not args.no_dropout)
    b, li, lt = args.batch_size, args.inputs_length, args.targets_length
    rng = np.random.default_rng(0)
    host = {"inputs": rng.integers(2, config.vocab_size, (b, li), dtype=np.int32),
            "inputs_mask": np.ones((b, li), np.int32),
            "targets": rng.integers(2, config.vocab_size, (b, lt), dtype=np.int32),
            "targets_mask": np.ones((b, lt), np.int32)}
    info = {"config": {k: str(v) for k, v in vars(config).items()},
            "shapes": f"{b} examples x ({li} in + {lt} out) tokens", "batch_size": b,
            "inputs_length": li, "targets_length": lt, "tokens_per_step": b * (li + lt)}
    return model, host, t5_train_flops(config, b, li, lt), info


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--preset", default="base", help="T5Config preset: tiny, mini, small, base")
    parser.add_argument("--vocab-size", type=int, default=32128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--inputs-length", type=int, default=256)
    parser.add_argument("--targets-length", type=int, default=32)
    parser.add_argument("--smoke", action="store_true",
                        help="T5 tiny, vocab 512, batch 4, lengths 16/8, 2 steps: a CPU check")
    args = parser.parse_args()
    check_options(parser, args)
    if args.smoke:
        args.preset, args.vocab_size, args.batch_size = "tiny", 512, 4
        args.inputs_length, args.targets_length = 16, 8
        args.steps, args.warmup, args.matmul_n = 2, 1, 256
    return args


def main() -> None:
    args = parse_args()
    measure_options(args, build, f"T5-{args.preset}")


if __name__ == "__main__":
    main()
