"""Checkpoint files: atomic writes, safe loads (weights_only, never code), architecture checks, run loading.

A checkpoint is trusted for nothing: before a model is built from it, its recipe is checked (every key, the data
set's class count, the budget) and every tensor's shape is compared with the shapes that recipe's model has, worked
out on the meta device (no memory), so that a small file cannot make budgetnet allocate a huge model."""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__, atomic
from ..config import Recipe, from_dict
from ..design.model import ResNet
from ..design.spec import check_budget
from ..errors import UsageError
from .rundir import MetricRow, RunFiles

FORMAT = "budgetnet-checkpoint-1"


class CheckpointError(UsageError):
    """A checkpoint that is missing, unreadable, or does not fit the model it is loaded into."""


@dataclass
class CheckpointMeta:
    """What a checkpoint holds besides the weights and the optimizer's, schedule's and lookahead's state dicts: the
    epochs finished, the best validation (else test) accuracy of the checkpointed epochs, the EMA's updates (with an
    EMA), the run's recipe, parameter count and class names, the budgetnet that wrote it, and the epoch's metric
    row. A field is None where a checkpoint of an older budgetnet lacks it (class names before 0.2.0)."""

    format: str
    epoch: int
    best: float
    ema_updates: int | None
    recipe: dict[str, Any]
    params: int | None
    classes: list[str] | None
    budgetnet_version: str | None
    budgetnet_commit: str | None
    metrics: MetricRow | None

    @classmethod
    def of(cls, state: dict[str, Any]) -> CheckpointMeta:
        """The metadata of a loaded checkpoint `state` (checked by `checked_recipe` when it is to be trusted)."""
        meta = cls(**{f.name: state.get(f.name) for f in fields(cls)})
        meta.classes = list(meta.classes) if meta.classes else None
        meta.metrics = MetricRow.from_dict(meta.metrics) if isinstance(meta.metrics, dict) else None
        return meta

    @property
    def written_by(self) -> str:
        """Which budgetnet wrote the checkpoint, for messages: 'budgetnet 0.2.0', or 'budgetnet 0.1.0' for one
        written before checkpoints recorded their version."""
        return f"budgetnet {self.budgetnet_version or '0.1.0'}"


def save(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint so that a crash, a kill or a full disk mid-write leaves the previous file intact (a full
    disk raises atomic.DiskFullError naming the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # serialized in memory, so that the file write raises a real OSError (ENOSPC)
    torch.save({"format": FORMAT, **state}, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with weights_only=True: tensors and plain containers only, no code runs."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's text would suggest weights_only=False: never for a file of unknown origin
        raise CheckpointError(f"{path} is not a plain checkpoint (it holds Python objects beyond tensors and "
                              "containers, which could run code): not loaded") from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, or not a torch file: "
                              f"{type(e).__name__}): not loaded") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a budgetnet checkpoint (format {FORMAT} expected)")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{path} was written by {CheckpointMeta.of(state).written_by} in format "
                              f"{state['format']}, which this budgetnet {__version__} does not read ({FORMAT}): load "
                              "it with the version that wrote it")
    return state


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load a state dict, naming the first mismatching tensors when the architectures differ."""
    check_shapes(model.state_dict(), weights, source)
    model.load_state_dict(weights)


def check_shapes(own: dict[str, torch.Tensor], weights: Any, source: str = "checkpoint") -> None:
    """Raise CheckpointError naming the first mismatching tensors unless `weights` holds exactly the tensors of
    state dict `own`, shape for shape (`own` may live on the meta device)."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"the {source}'s weights are not a state dict of tensors")
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k}: {tuple(weights[k].shape)} in the {source}, {tuple(v.shape)} in the model"
              for k, v in own.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or shapes:
        details = "; ".join(
            ([f"missing from the {source}: {', '.join(map(str, missing[:3]))}"] if missing else [])
            + ([f"not in the model: {', '.join(map(str, unexpected[:3]))}"] if unexpected else [])
            + shapes[:3])
        raise CheckpointError(f"the {source} was saved from a different architecture ({details})")


def checked_recipe(state: dict[str, Any], path: Path) -> Recipe:
    """The recipe of checkpoint `state` (read from `path`), once it and the checkpoint agree: its fields are there
    and of their kind, the recipe holds (every key, the data set's class count, the budget), the class names
    match the class count, and every tensor has the shape the recipe's model has (worked out on the meta device,
    so nothing is allocated); CheckpointError in one line otherwise."""
    for key, kind in (("recipe", dict), ("model", dict), ("epoch", int)):
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"{path}: its '{key}' is missing or not of type {kind.__name__}, so it is not a checkpoint "
                                  "budgetnet wrote: not loaded")
    try:
        recipe = from_dict(Recipe, state["recipe"])
        recipe.validate()
        check_budget(recipe.model, recipe.budget)
    except UsageError as e:
        raise CheckpointError(f"{path}: its recipe does not hold ({e}): not loaded") from None
    classes = state.get("classes")
    if classes and (not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes)
                    or len(classes) != recipe.model.num_classes):
        raise CheckpointError(f"{path}: its class names are not {recipe.model.num_classes} names, as its recipe's "
                              f"model.num_classes={recipe.model.num_classes} says: not loaded")
    with torch.device("meta"):
        expected = ResNet(recipe.model).state_dict()
    check_shapes(expected, state["model"], f"checkpoint {path}")
    return recipe


def resolve(run_or_checkpoint: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a run directory (best, else last) or the file itself."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        files = RunFiles(path)
        named = {"best": files.best, "last": files.last}
        if which not in named:
            raise CheckpointError(f"checkpoint {which!r} is unknown: use best or last")
        for name in (which, "last", "best"):
            if named[name].is_file():
                return named[name]
        raise CheckpointError(f"{path} holds no checkpoints/ (is it a budgetnet run directory that has "
                              "finished at least one epoch?)")
    return path


def load_model(run_or_checkpoint: str | Path, which: str = "best",
               device: str | torch.device = "cpu") -> tuple[nn.Module, Recipe, CheckpointMeta]:
    """The trained model (eval mode, on `device`), its recipe and the checkpoint's metadata, of a run or file; the
    checkpoint is checked (`checked_recipe`) before the model is built."""
    path = resolve(run_or_checkpoint, which)
    state = load(path, device)
    recipe = checked_recipe(state, path)
    model = ResNet(recipe.model)
    load_weights(model, state["model"])
    return model.to(device).eval(), recipe, CheckpointMeta.of(state)
