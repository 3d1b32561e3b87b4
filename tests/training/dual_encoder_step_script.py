"""A tiny BERT dual encoder trained a few steps by the real Trainer on a (data, model) mesh.

Complements toy_train_script.py (a toy MLP) with the model real runs use: BertEncoder layers
whose 'heads' and 'mlp' axes split over 'model', dropout on, and a contrastive loss whose negative
pool is the global batch. Run in a subprocess with simulated devices; prints `RESULT {json}`.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python dual_encoder_step_script.py \
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

GLOBAL_BATCH, LQ, LD, VOCAB = 8, 6, 10, 64


class RandomPairs:
    """Deterministic random (query, positive) token batches; state is the step counter."""

    def __init__(self, rows: slice) -> None:
        self.rows, self.step = rows, 0

    def __iter__(self) -> "RandomPairs":
        return self

    def get_state(self) -> dict[str, int]:
        return {"step": self.step}

    def set_state(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    def global_batch(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([7, step])
        lengths = lambda n, length: rng.integers(2, length + 1, n)  # noqa: E731
        qmask = (np.arange(LQ) < lengths(GLOBAL_BATCH, LQ)[:, None]).astype(np.int32)
        dmask = (np.arange(LD) < lengths(GLOBAL_BATCH, LD)[:, None]).astype(np.int32)
        return {"query_ids": rng.integers(1, VOCAB, (GLOBAL_BATCH, LQ)).astype(np.int32) * qmask,
                "query_mask": qmask,
                "pos_ids": rng.integers(1, VOCAB, (GLOBAL_BATCH, LD)).astype(np.int32) * dmask,
                "pos_mask": dmask, "labels": np.arange(GLOBAL_BATCH, dtype=np.int32),
                "logit_mask": np.ones((GLOBAL_BATCH, GLOBAL_BATCH), bool)}

    def __next__(self) -> dict[str, np.ndarray]:
        batch = {k: v[self.rows] for k, v in self.global_batch(self.step).items()}
        self.step += 1
        return batch


def run(args: argparse.Namespace, workdir: Path, mesh=None, options: dict | None = None
        ) -> dict[str, Any]:
    """One training run; `options` = {'efficiency': {...}, 'optimizer': {...}, 'trainer': {...}}
    overrides of EncoderEfficiency / OptimizerConfig / TrainerConfig (the efficiency switches)."""
    import jax

    from irjax.models.bert import BertConfig
    from irjax.models.dual_encoder_training import DualEncoderModel
    from irjax.models.efficiency import EncoderEfficiency
    from irjax.training.optimizer import OptimizerConfig
    from irjax.parallel.processes import process_shard
    from irjax.training.trainer import Trainer
    from irjax.training.trainer_config import TrainerConfig

    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=16)
    options = options or {}
    model = DualEncoderModel(config, temperature=0.1, dropout=not args.no_dropout,
                             data_shards=args.data,
                             efficiency=EncoderEfficiency(**options.get("efficiency", {})))
    data = RandomPairs(process_shard(GLOBAL_BATCH))
    config = TrainerConfig(num_steps=args.steps, mesh_shape=(args.data, args.model), seed=5,
                           log_every=1, progress_bar=False, **options.get("trainer", {}))
    optimizer = OptimizerConfig(learning_rate=1e-2, **options.get("optimizer", {}))
    trainer = Trainer(model, workdir, config, optimizer, mesh=mesh, console=None)
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
    parser.add_argument("--no-dropout", action="store_true")
    parser.add_argument("--variants", default="{}",
                        help='JSON {name: options}: each also trained on the (data, model) mesh')
    args = parser.parse_args()
    import jax
    jax.config.update("jax_compilation_cache_dir", str(ROOT / ".cache" / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    from irjax.parallel.partitioning import create_mesh

    result = {"sharded": run(args, args.workdir)}
    for name, options in json.loads(args.variants).items():
        result[name] = run(args, args.workdir / name, options=options)
    if args.reference:
        result["reference"] = run(args, args.workdir / "reference",
                                  mesh=create_mesh(1, 1, devices=jax.devices()[:1]))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
