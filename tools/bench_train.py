"""Training throughput of irjax's dual-encoder train step versus sentence-transformers' MNRL on CPU.

    .venv/bin/python tools/bench_train.py [--steps 10] [--batch-size 32] [--query-length 32]
        [--doc-length 128] [--threads N] [--jax-only] [--json OUT.json] [--smoke]

Both sides fine-tune the same all-MiniLM-L6-v2 weights on the same SciFact training pairs (one
positive per train query, from $IRJAX_DATA_DIR or ../shared/data), with in-batch negatives only,
float32, dropout on (training mode), AdamW at a constant 2e-5 (betas 0.9/0.999, eps 1e-8, weight
decay 0.01 on matrices only, as irjax's decay_mask), gradients clipped to global norm 1.0.

irjax runs the real training code: `Trainer.initial_state` (MiniLM imported and merged into a
fresh state, as train_dual_encoder does) and the jitted, state-donating `Trainer.make_train_step`,
fed through `partitioning.global_batch` as in `Trainer.train`. The PyTorch side (a worker under
.venv-ref, as in tools/bench_encode.py) is a plain loop over the SentenceTransformer model with
`losses.MultipleNegativesRankingLoss` (scale 20 = irjax's temperature 0.05) and torch's fused
AdamW, which is what the sentence-transformers trainer picks by default for torch >= 2.8;
`model.fit`'s data loading and callbacks are left out on purpose.

What is timed, per step, identically on both sides: from token ids that are already tokenized
and padded (tokenization excluded on both sides) to updated parameters -- forward, loss,
backward, clipping and the optimizer update (irjax also pays the host-to-device put, as its
trainer does each step). Both sides get the *same* id arrays, made once by irjax's tokenizer from
the checkpoint's tokenizer.json and padded to fixed lengths (queries --query-length, documents
--doc-length), so both execute the same FLOPs; sentence-transformers' MNRL embeds the query
column in its own forward pass, so queries are not widened to the document length.

Steps alternate between the frameworks (one torch step, one irjax step, ...) so that load from
other processes hits both alike; both are pinned to the same --threads CPUs. The first --warmup
steps (compilation) are excluded. Reported: medians of per-step time, pairs/s, the ratio
irjax/sentence-transformers, and achieved GFLOP/s (3x the forward FLOPs of the padded batch) as a
fraction of this machine's float32 matmul peak, measured in the same run with a jitted jnp.dot.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (REF_PYTHON, REF_SETUP_HINT, ROOT, TorchWorker,  # noqa: E402
                          cpu_summary, load_sentence_transformer, pin_threads, serve, timed)

LEARNING_RATE, WEIGHT_DECAY, CLIP_NORM, TEMPERATURE = 2e-5, 0.01, 1.0, 0.05


def matmul_peak_gflops(n: int, dtype: str = "float32", repeats: int = 10) -> float:
    """Best-of-`repeats` GFLOP/s of a jitted n x n jnp.dot: the ceiling a step's matmuls can reach."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    return 2 * n**3 / timed(lambda: dot(a, a).block_until_ready(), repeats, best=True) / 1e9


def make_batches(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Fixed-shape host batches of SciFact train pairs (one per query, so a batch never holds a
    query twice and in-batch negatives are true negatives), plus real-token statistics."""
    import numpy as np

    from irjax.data.collection import load_collection
    from irjax.data.tokenization import WordPieceTokenizer, pad_sequences
    from irjax.data.training_examples import build_training_pairs
    from irjax.models.pretrained import load_checkpoint

    data = Path(os.environ.get("IRJAX_DATA_DIR", ROOT.parent / "shared" / "data")) / "scifact"
    if not (data / "qrels" / "train.tsv").exists():
        sys.exit(f"{data}/qrels/train.tsv not found; set IRJAX_DATA_DIR to the folder holding scifact/")
    pairs, queries, docs = [], set(), set()
    for pair in build_training_pairs(load_collection(data, "train")):
        if pair.qid not in queries and pair.pos_id not in docs:  # each query and doc once
            pairs.append(pair)
            queries.add(pair.qid)
            docs.add(pair.pos_id)
    b = args.batch_size
    count = min(len(pairs) // b, args.warmup + args.steps)
    if count < 1:
        sys.exit(f"--batch-size {b} exceeds the {len(pairs)} SciFact train queries")
    tokenizer = WordPieceTokenizer(load_checkpoint().directory)
    batches, real = [], 0
    for i in range(count):
        rows = pairs[i * b:(i + 1) * b]
        q = pad_sequences(tokenizer.tokenize([p.query for p in rows], args.query_length),
                          tokenizer.pad_id, args.query_length)
        d = pad_sequences(tokenizer.tokenize([p.pos_text for p in rows], args.doc_length),
                          tokenizer.pad_id, args.doc_length)
        real += int(q.lengths.sum() + d.lengths.sum())
        batches.append({"query_ids": q.ids, "query_mask": q.mask, "pos_ids": d.ids,
                        "pos_mask": d.mask, "labels": np.arange(b, dtype=np.int32),
                        "logit_mask": np.ones((b, b), bool)})
    padded = count * b * (args.query_length + args.doc_length)
    return batches, {"pairs": len(pairs), "distinct_batches": count, "real_token_fraction": real / padded}


# ----------------------------------------------------------------------------------------------
# PyTorch worker (runs under .venv-ref): one JSON line in reply to each command line.


def torch_worker(args: argparse.Namespace) -> None:
    import numpy as np

    torch, model = load_sentence_transformer(args.threads)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    loss_fn = MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8, fused=True)
    stored = np.load(args.batches_file)

    def features(prefix: str, i: int) -> dict:
        ids = torch.from_numpy(stored[f"{prefix}_ids_{i}"].astype(np.int64))
        return {"input_ids": ids, "attention_mask": torch.from_numpy(stored[f"{prefix}_mask_{i}"]
                .astype(np.int64)), "token_type_ids": torch.zeros_like(ids)}

    batches = [(features("query", i), features("pos", i)) for i in range(int(stored["count"]))]

    def loss_of(i: int) -> torch.Tensor:
        q, d = batches[i % len(batches)]
        return loss_fn([dict(q), dict(d)], None)  # copies: the modules write outputs into them

    def step(rest: list[str]) -> dict:
        model.train(not args.no_dropout)  # eval mode only switches dropout off here
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(int(rest[0]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
        optimizer.step()
        return {"seconds": time.perf_counter() - start, "loss": loss.item()}

    def eval_loss(rest: list[str]) -> dict:
        model.eval()
        with torch.no_grad():
            return {"loss": float(loss_of(int(rest[0])))}

    serve(torch, {"step": step, "eval_loss": eval_loss}, args.matmul_n)


# ----------------------------------------------------------------------------------------------
# irjax side (runs under .venv)


class IrjaxSteps:
    """The trainer's jitted step on MiniLM, one blocking call per step (state donated each time)."""

    def __init__(self, args: argparse.Namespace, workdir: str, example: dict,
                 grad_cache_tokens: int | None = None):
        import jax

        from irjax.models.bert import BertConfig
        from irjax.models.dual_encoder_training import DualEncoderModel
        from irjax.models.efficiency import EncoderEfficiency
        from irjax.models.hf_import import load_bert_params
        from irjax.models.pretrained import load_checkpoint
        from irjax.training.optimizer import OptimizerConfig
        from irjax.training.trainer import Trainer
        from irjax.training.trainer_config import TrainerConfig

        checkpoint = load_checkpoint()
        self.config = BertConfig.from_json(checkpoint.config_path)
        self.model = DualEncoderModel(self.config, temperature=TEMPERATURE, pooling=checkpoint.pooling,
                                      dropout=not args.no_dropout,
                                      efficiency=EncoderEfficiency(
                                          attention=args.attention, remat=args.remat,
                                          grad_cache_tokens=grad_cache_tokens))
        total = args.warmup + args.steps
        optimizer = OptimizerConfig(learning_rate=LEARNING_RATE, decay="constant",
                                    weight_decay=WEIGHT_DECAY, clip_norm=CLIP_NORM)
        self.trainer = Trainer(
            self.model, workdir, TrainerConfig(num_steps=total, progress_bar=False,
                                               prng_impl=args.prng_impl), optimizer,
            console=None, import_params=lambda: self.model.from_pretrained_params(
                load_bert_params(checkpoint.weights_path, self.config)))
        # the state a new run starts from: imported MiniLM merged into a fresh state
        self.state, shardings, self.source = self.trainer.initial_state(example)
        self.train_step = self.trainer.make_train_step(shardings)
        self.jax = jax

    def eval_loss(self, host_batch: dict) -> float:
        """Loss with dropout off on the current params: must match the torch side's eval loss."""
        import dataclasses

        from irjax.parallel import partitioning as pt

        model = dataclasses.replace(self.model, dropout=False)
        with pt.with_sharding_rules(self.trainer.mesh, self.trainer.rules):
            batch = pt.global_batch(host_batch, self.trainer.mesh)
            loss, _ = self.jax.jit(model.loss)(self.state.params, batch, self.jax.random.key(0))
        return float(loss)

    def step(self, host_batch: dict) -> tuple[float, float]:
        """(seconds, loss) of one step as Trainer.train runs it, blocking on the new state."""
        from irjax.parallel import partitioning as pt

        mesh = self.trainer.mesh
        start = time.perf_counter()
        batch = pt.global_batch(host_batch, mesh)
        with pt.with_sharding_rules(mesh, self.trainer.rules):
            self.state, metrics = self.train_step(self.state, batch)
        self.jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - start, float(metrics["loss"])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per framework")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    parser.add_argument("--batch-size", type=int, default=32, help="query-document pairs per step")
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--doc-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--matmul-n", type=int, default=2048, help="size of the peak-FLOP/s matmul")
    parser.add_argument("--jax-only", action="store_true", help="skip the sentence-transformers side")
    parser.add_argument("--no-dropout", action="store_true",
                        help="dropout off on both sides, to see what it costs (default: on)")
    parser.add_argument("--grad-cache-tokens", type=int, default=None,
                        help="also time irjax with GradCache slices of this many tokens "
                             "(alternating with the plain step)")
    parser.add_argument("--prng-impl", default=None, help="TrainerConfig.prng_impl of irjax's steps")
    parser.add_argument("--attention", default="einsum", help="EncoderEfficiency.attention of irjax")
    parser.add_argument("--remat", default="none", help="EncoderEfficiency.remat of irjax")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run for tests: 1 warm-up + 1 step, batch 2, lengths 16/32")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batches-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.batch_size = 1, 1, 2
        args.query_length, args.doc_length, args.matmul_n = 16, 32, 256
    return args


def summary(times: list[float], batch_size: int, flops: float, peak: float) -> dict[str, Any]:
    median = statistics.median(times)
    return {"step_s_median": median, "pairs_per_s": batch_size / median,
            "gflops": flops / median / 1e9, "fraction_of_peak": flops / median / 1e9 / peak,
            "step_s": times}


def main() -> None:
    args = parse_args()
    if args.torch_worker:
        return torch_worker(args)
    if args.steps < 1 or args.warmup < 1:
        sys.exit("--steps and --warmup must be >= 1 (the first step compiles)")
    with_torch = not args.jax_only
    if with_torch and not REF_PYTHON.exists():
        sys.exit(f"{REF_PYTHON} not found ({REF_SETUP_HINT}), "
                 "or pass --jax-only to time irjax alone")
    pin_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    import numpy as np

    batches, data_stats = make_batches(args)
    with tempfile.TemporaryDirectory() as tmp:
        worker = None
        if with_torch:  # started before jax is imported, as in bench_encode
            stored = {"count": len(batches)}
            for i, batch in enumerate(batches):
                stored.update({f"{k}_{i}": batch[k]
                               for k in ("query_ids", "query_mask", "pos_ids", "pos_mask")})
            np.savez(Path(tmp) / "batches.npz", **stored)
            worker = TorchWorker(__file__, [
                "--threads", str(args.threads), "--matmul-n", str(args.matmul_n),
                "--batches-file", str(Path(tmp) / "batches.npz"),
                *(["--no-dropout"] if args.no_dropout else [])])
        import jax

        from irjax.models.bert import flops_per_token

        irjax = IrjaxSteps(args, str(Path(tmp) / "plain"), batches[0])
        cached = (IrjaxSteps(args, str(Path(tmp) / "grad_cache"), batches[0],
                             grad_cache_tokens=args.grad_cache_tokens)
                  if args.grad_cache_tokens else None)
        config, b, lq, ld = irjax.config, args.batch_size, args.query_length, args.doc_length
        flops = 3 * b * (lq * flops_per_token(config, lq) + ld * flops_per_token(config, ld))
        print(f"SciFact train: {data_stats['pairs']} pairs with distinct queries and docs, "
              f"{data_stats['distinct_batches']} distinct batches of {b}; lengths {lq}/{ld} "
              f"(real-token fraction {data_stats['real_token_fraction']:.2f}); dropout "
              f"{'off' if args.no_dropout else 'on'}; {args.threads} threads; "
              f"{jax.devices()[0].platform}, jax {jax.__version__}; irjax state from {irjax.source}"
              + (f"; torch {worker.info['torch']} ({worker.info['threads']} threads)" if worker else ""))
        print(cpu_summary())
        eval_losses = {"irjax": irjax.eval_loss(batches[0])}
        if cached:
            eval_losses["irjax_grad_cache"] = cached.eval_loss(batches[0])
        if worker:
            eval_losses["sentence_transformers"] = worker.ask("eval_loss 0")["loss"]
        print("loss on batch 0 before training, dropout off: "
              + ", ".join(f"{k} {v:.5f}" for k, v in eval_losses.items()))

        jx_times, st_times, jx_losses, st_losses, gc_times, gc_losses = [], [], [], [], [], []
        compile_s = 0.0
        for i in range(args.warmup + args.steps):
            if worker:
                reply = worker.ask(f"step {i}")
                st_times.append(reply["seconds"])
                st_losses.append(reply["loss"])
            seconds, loss = irjax.step(batches[i % len(batches)])
            compile_s = compile_s or seconds
            jx_times.append(seconds)
            jx_losses.append(loss)
            if cached:
                seconds, loss = cached.step(batches[i % len(batches)])
                gc_times.append(seconds)
                gc_losses.append(loss)
        peak = matmul_peak_gflops(args.matmul_n)
        torch_peak = 2 * args.matmul_n**3 / worker.ask("matmul")["seconds"] / 1e9 if worker else None
        if worker:
            worker.close()

    timed_jx, timed_st = jx_times[args.warmup:], st_times[args.warmup:]
    result: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("torch_worker", "batches_file")},
        "data": data_stats, "flops_per_step": flops, "eval_loss_batch0": eval_losses,
        "peak_gflops": {"jnp_dot_float32": peak, "torch_mm_float32": torch_peak},
        "irjax": {**summary(timed_jx, b, flops, peak), "first_step_s": compile_s,
                  "losses": jx_losses},
    }
    print(f"\nmedians of {args.steps} timed steps each, alternating, after {args.warmup} warm-up "
          f"(irjax's first step, with compilation: {compile_s:.1f} s)")
    rows = [("irjax", result["irjax"])]
    if cached:
        result["irjax_grad_cache"] = {**summary(gc_times[args.warmup:], b, flops, peak),
                                      "losses": gc_losses}
        result["ratio_grad_cache_over_plain"] = (statistics.median(timed_jx)
                                                 / statistics.median(gc_times[args.warmup:]))
        rows.append((f"irjax GradCache {args.grad_cache_tokens}", result["irjax_grad_cache"]))
    if worker:
        result["sentence_transformers"] = {**summary(timed_st, b, flops, peak), "losses": st_losses}
        ratio = statistics.median(timed_st) / statistics.median(timed_jx)
        result["ratio_irjax_over_sentence_transformers"] = ratio
        rows.insert(0, ("sentence-transformers", result["sentence_transformers"]))
    for name, r in rows:
        print(f"  {name:22s} {r['step_s_median'] * 1e3:8.1f} ms/step  {r['pairs_per_s']:7.1f} pairs/s  "
              f"{r['gflops']:6.1f} GFLOP/s = {r['fraction_of_peak']:.0%} of peak   "
              f"steps {[round(t, 3) for t in r['step_s']]}")
    if worker:
        print(f"  ratio irjax / sentence-transformers (pairs/s): "
              f"{result['ratio_irjax_over_sentence_transformers']:.2f}x")
        if cached:
            result["ratio_grad_cache_over_sentence_transformers"] = (
                statistics.median(timed_st) / statistics.median(gc_times[args.warmup:]))
            print(f"  ratio irjax GradCache / sentence-transformers (pairs/s): "
                  f"{result['ratio_grad_cache_over_sentence_transformers']:.2f}x")
    if cached:
        print(f"  ratio GradCache / plain irjax (pairs/s): {result['ratio_grad_cache_over_plain']:.2f}x")
    result["cpu"] = cpu_summary()
    print(f"training FLOPs per step (3x forward, padded): {flops / 1e9:.1f} GFLOP; float32 matmul "
          f"peak ({args.matmul_n}^2, best of 10): jnp.dot {peak:.1f} GFLOP/s"
          + (f", torch.mm {torch_peak:.1f}" if torch_peak else ""))
    print("training losses: " + "; ".join(f"{name} {[round(x, 3) for x in r['losses']]}" for name, r in rows))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
