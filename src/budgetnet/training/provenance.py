"""What a result was produced with: the budgetnet commit, the device's model, and the versions of the software."""
from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
from pathlib import Path

import torch

from .. import __version__


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the budgetnet checkout this code runs from (None when installed from a package)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_name(device: torch.device) -> str:
    """The device's model: the GPU's name, or the CPU's (/proc/cpuinfo's model name on Linux, else
    platform.processor(), else the architecture) with the number of threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    return f"{model or platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def provenance(device: torch.device, commit: bool = True) -> dict:
    """What a figure was measured with: the device and its model, torch and CUDA versions, budgetnet version and
    commit (figures are compared across machines); with `commit` false the commit is not looked up (None)."""
    return {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "cuda": torch.version.cuda, "budgetnet_version": __version__,
            "budgetnet_commit": git_commit() if commit else None}
