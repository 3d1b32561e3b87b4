"""A tiny T5 Seq2SeqModel trained a few steps by the real Trainer on a (data, model) mesh.

The generative-retrieval counterpart of dual_encoder_step_script.py: T5 layers whose 'heads',
'mlp' and 'vocab' axes split over 'model', dropout on, and a token-mean loss over the global
batch, whose rows have different numbers of target tokens (so a per-shard mean would differ).
Run in a subprocess with simulated devices; prints `RESULT {json}`.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python t5_step_script.py \
        --workdir /tmp/w --data 4 --model 2 --reference
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_train_script import ROOT, flat_params, read_losses  # noqa: E402

GLOBAL_BATCH, LI, LT, VOCAB = 8, 10, 6, 64


class RandomPairs:
    """Deterministic random (input, EOS-terminated target) batches; state is the step counter."""

    def __init__(self, rows: slice) -> None:
        self.rows, self.step = rows, 0

    def __iter__(self) -> "RandomPairs":
        return self

    def get_state(self) -> dict[str, int]:
        return {"step": self.step}

    def set_state(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    def global_batch(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([11, step])
        imask = (np.arange(LI) < rng.integers(2, LI + 1, GLOBAL_BATCH)[:, None]).astype(np.int32)
        tlen = rng.integers(1, LT + 1, GLOBAL_BATCH)
        tmask = (np.arange(LT) < tlen[:, None]).astype(np.int32)
        targets = rng.integers(2, VOCAB, (GLOBAL_BATCH, LT)).astype(np.int32)
        targets[np.arange(GLOBAL_BATCH), tlen - 1] = 1  # EOS
        return {"inputs": rng.integers(2, VOCAB, (GLOBAL_BATCH, LI)).astype(np.int32) * imask,
                "inputs_mask": imask, "targets": targets * tmask, "targets_mask": tmask}

    def __next__(self) -> dict[str, np.ndarray]:
        batch = {k: v[self.rows] for k, v in self.global_batch(self.step).items()}
        self.step += 1
        return batch


def run(args: argparse.Namespace, workdir: Path, mesh=None) -> dict[str, Any]:
    import jax

    from irjax.models.seq2seq import Seq2SeqModel
    from irjax.models.t5 import T5Config
    from irjax.training.optimizer import OptimizerConfig
    from irjax.parallel.processes import process_shard
    from irjax.training.trainer import Trainer
    from irjax.training.trainer_config import TrainerConfig

    config = T5Config.preset("tiny", vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32,
                             relative_attention_num_buckets=8, relative_attention_max_distance=16,
                             dropout_rate=0.1)
    model = Seq2SeqModel(config)
    data = RandomPairs(process_shard(GLOBAL_BATCH))
    config = TrainerConfig(num_steps=args.steps, mesh_shape=(args.data, args.model), seed=5,
                           log_every=1, progress_bar=False)
    # Adam's first steps are ~lr * sign(g): where a gradient element nearly cancels,
    # reduction-order rounding moves it by up to ~lr * 1e-3 (lr 1e-2 gave 1.8e-5 on lm_head),
    # so a smaller lr keeps 1e-5 a real bound.
    trainer = Trainer(model, workdir, config, OptimizerConfig(learning_rate=1e-3), mesh=mesh,
                      console=None)
    result = trainer.train(data, data.global_batch(0) if mesh is not None else
                           {k: v[data.rows] for k, v in data.global_batch(0).items()})
    specs = {jax.tree_util.keystr(p): [None if a is None else str(a) for a in v.sharding.spec]
             for p, v in jax.tree_util.tree_flatten_with_path(result.params)[0]}
    return {"params": flat_params(result.params), "losses": read_losses(workdir),
            "devices": int(trainer.mesh.devices.size), "specs": specs}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--data", type=int, default=4)
    parser.add_argument("--model", type=int, default=2)
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    import jax
    jax.config.update("jax_compilation_cache_dir", str(ROOT / ".cache" / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    from irjax.parallel.partitioning import create_mesh

    result = {"sharded": run(args, args.workdir)}
    if args.reference:
        result["reference"] = run(args, args.workdir / "reference",
                                  mesh=create_mesh(1, 1, devices=jax.devices()[:1]))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
