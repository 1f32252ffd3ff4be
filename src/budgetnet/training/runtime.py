"""Where and how computation runs: device choice, backend settings, autocast precision, compilation, ranks."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..config import CompileMode, Precision
from ..errors import UsageError


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """This process's place as torchrun's environment variables describe it, without joining a process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, Gloo on CPU)."""
    info = from_env()
    if info.world_size == 1:
        return info
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' is the local rank's CUDA device when there is one, else the CPU. The device key is checked here, not
    in Recipe.validate: whether it exists is a fact of this machine."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device={name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name!r} but no CUDA device is available: use device=cpu or auto")
    return device


def configure_backend(device: torch.device) -> None:
    """On CUDA, let cuDNN benchmark its convolution algorithms for the run's shapes (cudnn.benchmark) and let
    fp32 matmuls use TF32 (convolutions do by default). The chosen algorithms may differ between processes, so
    a run resumed on CUDA continues equivalently but not bit-identically; on the CPU nothing changes and resume
    is exact (tests/test_fast.py). Nothing to do on the CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def compile_model(model: torch.nn.Module, enabled: bool, mode: CompileMode = "default") -> torch.nn.Module:
    """`model` under torch.compile in `mode` (a recipe's compile_mode, which Recipe.validate checks) when enabled
    (reduce-overhead and max-autotune add CUDA graphs), else `model` itself. Compilation happens in the first
    steps, which take the compile time."""
    return torch.compile(model, mode=mode) if enabled else model


def autocast(device: torch.device, precision: Precision = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA under 'auto' or 'bf16', bf16 on CPU only when asked, otherwise fp32 (`precision` is a
    recipe's, which Recipe.validate checks)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def broadcast_buffers(module: nn.Module, ddp: Dist) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), so that all ranks evaluate the weights
    rank 0 checkpoints; DDP syncs them only at the start of each forward pass."""
    if ddp.world_size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)
