"""Runs one command as N local JAX processes, each with its own simulated CPU devices.

This is how multi-host training is exercised on one machine: every process gets
JAX_PLATFORMS=cpu, XLA_FLAGS=--xla_force_host_platform_device_count=K and the IRJAX_* variables
that `irjax.parallel.distributed.initialize_distributed` reads (a shared free localhost port as
coordinator). Output lines are prefixed with the process id; if any process fails the others
are killed, since the survivors would otherwise hang in a collective until their timeout.

    python launch/local_multiprocess.py --num_processes 2 --devices_per_process 4 -- \
        python -m some.module --flags
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Mapping, Sequence, TextIO

_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")


@dataclasses.dataclass
class ProcessResult:
    process_id: int
    returncode: int | None
    output: list[str]


class LaunchError(RuntimeError):
    """A process failed or the launch timed out; `results` holds every process's output."""

    def __init__(self, message: str, results: list[ProcessResult]):
        super().__init__(message)
        self.results = results


def free_port() -> int:
    """A port that was free a moment ago (the coordinator binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def process_env(base: Mapping[str, str], process_id: int, num_processes: int,
                devices_per_process: int, coordinator: str) -> dict[str, str]:
    """The environment of one process: CPU only, K devices, and where to meet the others."""
    env = dict(base)
    flags = _DEVICE_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
    flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    env.update(
        XLA_FLAGS=" ".join(flags),
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",
        IRJAX_COORDINATOR=coordinator,
        IRJAX_NUM_PROCESSES=str(num_processes),
        IRJAX_PROCESS_ID=str(process_id),
    )
    return env


def _pump(pid: int, pipe: TextIO, sink: list[str], stream: TextIO | None,
          lock: threading.Lock) -> None:
    for line in iter(pipe.readline, ""):
        line = line.rstrip("\n")
        sink.append(line)
        if stream is not None:
            with lock:
                stream.write(f"[{pid}] {line}\n")
                stream.flush()
    pipe.close()


def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Terminates the process group this launcher created for `proc` (SIGKILL after grace)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def launch_local(command: Sequence[str], num_processes: int, devices_per_process: int, *,
                 env: Mapping[str, str] | None = None, timeout_s: float | None = None,
                 stream: TextIO | None = sys.stdout, cwd: str | None = None,
                 port: int | None = None) -> list[ProcessResult]:
    """Starts the processes, waits for all, and raises LaunchError if any fails or times out."""
    if not command:
        raise ValueError("no command given; pass it after '--', e.g. -- python -m my.module")
    if num_processes < 1 or devices_per_process < 1:
        raise ValueError("num_processes and devices_per_process must be >= 1, got "
                         f"{num_processes} and {devices_per_process}")
    coordinator = f"localhost:{port or free_port()}"
    base = dict(os.environ if env is None else env)
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    outputs: list[list[str]] = []
    pumps: list[threading.Thread] = []
    try:
        for pid in range(num_processes):
            proc = subprocess.Popen(
                list(command), cwd=cwd, text=True, bufsize=1,
                env=process_env(base, pid, num_processes, devices_per_process, coordinator),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            outputs.append([])
            pump = threading.Thread(target=_pump, daemon=True,
                                    args=(pid, proc.stdout, outputs[-1], stream, lock))
            pump.start()
            pumps.append(pump)

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        failure = None
        while failure is None and any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                failure = f"process {failed[0]} exited with code {procs[failed[0]].returncode}"
            elif deadline is not None and time.monotonic() > deadline:
                failure = f"timed out after {timeout_s} s"
            else:
                time.sleep(0.05)
        if failure is None:
            failed = [i for i, p in enumerate(procs) if p.returncode != 0]
            if failed:
                failure = f"process {failed[0]} exited with code {procs[failed[0]].returncode}"
    finally:
        for proc in procs:
            _stop(proc)
        for pump in pumps:
            pump.join(timeout=5)

    results = [ProcessResult(i, p.returncode, out) for i, (p, out) in
               enumerate(zip(procs, outputs))]
    if failure is not None:
        tail = "\n".join(f"[{r.process_id}] {line}" for r in results for line in r.output[-20:])
        raise LaunchError(f"{failure}; the other processes were stopped. Last output:\n{tail}",
                          results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: local_multiprocess.py [options] -- command ...", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=4)
    parser.add_argument("--timeout_s", type=float, default=None)
    args = parser.parse_args(argv[:split])
    try:
        launch_local(argv[split + 1:], args.num_processes, args.devices_per_process,
                     timeout_s=args.timeout_s)
    except LaunchError as error:
        print(str(error).splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
