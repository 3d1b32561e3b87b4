"""launch/gpu_env.sh: the XLA GPU flags are added once, flags the user set win, and it can be off."""
import subprocess

from tests.helpers import ROOT

SCRIPT = ROOT / "launch" / "gpu_env.sh"


def sourced(env: dict[str, str], twice: bool = False) -> dict[str, str]:
    command = f"source {SCRIPT}; " + (f"source {SCRIPT}; " if twice else "") + \
        'printf "%s\\n%s\\n" "${XLA_FLAGS:-}" "${CUDA_DEVICE_MAX_CONNECTIONS:-}"'
    out = subprocess.run(["bash", "-c", command], env={"PATH": "/usr/bin:/bin", **env},
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return {"XLA_FLAGS": out[0], "CUDA_DEVICE_MAX_CONNECTIONS": out[1]}


def test_adds_the_flags_once_and_keeps_the_users():
    env = sourced({"XLA_FLAGS": "--xla_dump_to=/tmp/d --xla_gpu_enable_latency_hiding_scheduler=false"},
                  twice=True)
    flags = env["XLA_FLAGS"].split()
    assert flags[:2] == ["--xla_dump_to=/tmp/d", "--xla_gpu_enable_latency_hiding_scheduler=false"]
    assert "--xla_gpu_enable_highest_priority_async_stream=true" in flags
    assert sum(f.startswith("--xla_gpu_enable_command_buffer=") for f in flags) == 1
    assert len(flags) == len(set(flags)) == 4
    assert env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"


def test_can_be_switched_off():
    assert sourced({"IRJAX_GPU_FLAGS": "0"}) == {"XLA_FLAGS": "", "CUDA_DEVICE_MAX_CONNECTIONS": ""}
