"""Which device a search worker trains on: 'auto' claims a GPU that no other worker on this machine holds."""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO

import torch

from ...training.runtime import resolve_device
from .errors import SearchError


def _gpu_ids() -> list[str]:
    """The UUIDs of the CUDA devices this process sees (the same physical GPU has the same id in every process)."""
    if not torch.cuda.is_available():
        return []
    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]


def claim_gpu(ids: list[str], lock_dir: str | Path | None = None) -> tuple[int, IO]:
    """The index of the first GPU in `ids` that no other search worker on this machine holds, and its held lock.

    The lock (a file in the temp folder, per user and GPU) is released when the file is closed or the process
    ends, however it ends.
    """
    lock_dir = Path(lock_dir or tempfile.gettempdir())
    for index, gpu in enumerate(ids):
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in gpu)
        lock = open(lock_dir / f"budgetnet-search-{os.getuid()}-{name}.lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return index, lock
        except BlockingIOError:
            lock.close()
    raise SearchError(f"all {len(ids)} GPUs of this machine already have a budgetnet search worker: start one "
                      "worker per GPU, or pass --device cuda:K to run this one beside another")


def worker_device(device: str, lock_dir: str | Path | None = None) -> tuple[str, IO | None]:
    """The device of this worker: 'auto' claims a GPU of its own (claim_gpu) or is the CPU; others are kept."""
    if device != "auto":
        resolve_device(device)  # an unknown or missing device fails here, before any trial
        return device, None
    ids = _gpu_ids()
    if not ids:
        return "cpu", None
    index, lock = claim_gpu(ids, lock_dir)
    return f"cuda:{index}", lock
