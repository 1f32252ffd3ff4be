"""The run directory's files (recipe, metrics, overrides, summary, checkpoints): what every reader of runs imports."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from .config import Recipe
from .errors import RunFailed, UsageError


@dataclass
class RunFiles:
    """The files of a run directory."""

    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def overrides(self) -> Path:
        return self.root / "overrides.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def remove_partial_writes(self) -> None:
        """Delete the `.tmp` files a killed writer left behind (the files they were replacing are intact)."""
        for folder in (self.root, self.checkpoints):
            for tmp in folder.glob("*.tmp"):
                tmp.unlink(missing_ok=True)


class DiskFullError(RunFailed):
    """The disk filled while writing a run-directory file; the partial file was removed, earlier files are intact."""


class RunBusyError(UsageError):
    """Another process is writing the run directory (it holds its lock)."""


@contextlib.contextmanager
def locked(files: RunFiles) -> Iterator[None]:
    """Create the run directory and hold its lock for the block: one writer per run directory.

    The lock is an flock on `.lock`, which holds the writer's PID; the kernel drops it when the process ends
    however it ends, so a killed writer leaves nothing stuck. A second writer is refused with RunBusyError.
    """
    files.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise RunBusyError(f"{files.root} is being written by another budgetnet process (PID {pid}): wait for it "
                               "to end or stop it, then rerun; one run directory takes one writer") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash, a kill or a full disk leaves the previous file (and no partial
    `.tmp`, except after SIGKILL: `RunFiles.remove_partial_writes` cleans those up at the next start)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise DiskFullError(f"no space left on device while writing {path}") from None
        raise


def default_run_dir(name: str) -> Path:
    """runs/<recipe name>-<local time>, the run directory when none is given."""
    return Path("runs") / f"{Path(name).stem}-{datetime.now():%Y%m%d-%H%M%S}"


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file ([] when it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The per-epoch metric rows of a run directory."""
    return read_jsonl(RunFiles(Path(run_dir)).metrics)


def finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, so that it is standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Standard JSON of `obj` (NaN and infinities as null: JavaScript and jq reject bare NaN)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Replace a JSON-lines file atomically with `rows`."""
    write_atomic(path, "".join(dumps(r) + "\n" for r in rows).encode())


def append_jsonl(path: Path, row: dict) -> None:
    """Add one row to a JSON-lines file (a full disk raises DiskFullError)."""
    try:
        with path.open("a") as f:
            f.write(dumps(row) + "\n")
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFullError(f"no space left on device while writing {path}") from None
        raise


def write_summary(files: RunFiles, summary: dict) -> None:
    """Replace summary.json atomically, so that a reader or a kill never sees half of it."""
    write_atomic(files.summary, dumps(summary, indent=2).encode())


def summarize(recipe: Recipe, params: int, history: list[dict], status: str, **extra: Any) -> dict:
    """What a run reached so far; `final_test_acc` is the honest figure, `best_*` is chosen on validation
    when there is a validation split (on test otherwise) among the epochs evaluated every eval_every, and
    `best_seen_*` is the best plain test accuracy (no TTA) recorded every test_every epochs, chosen on the test
    set as the study did (None without test_every). `extra` adds keys (provenance)."""
    last = history[-1] if history else {}
    key = "val_acc" if any("val_acc" in r for r in history) else "test_acc"
    best_row = max((r for r in history if key in r), key=lambda r: r[key], default={})
    seen_row = max((r for r in history if "plain_test_acc" in r), key=lambda r: r["plain_test_acc"], default={})
    return {"status": status, "params": params, "epochs": recipe.epochs,
            "epochs_done": len(history), "final_test_acc": last.get("test_acc"),
            "final_test_loss": last.get("test_loss"), "best_by": key, "best_epoch": best_row.get("epoch"),
            "best_acc": best_row.get(key), "best_test_acc": best_row.get("test_acc"),
            "best_seen_test_acc": seen_row.get("plain_test_acc"), "best_seen_test_epoch": seen_row.get("epoch"),
            "train_seconds": sum(r["seconds"] for r in history),
            "images_per_s": (sum(r["images_per_s"] for r in history) / len(history)) if history else None,
            "description": recipe.description, **extra}
