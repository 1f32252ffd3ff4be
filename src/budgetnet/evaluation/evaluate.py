"""Evaluation of a run: accuracy and loss, per-class accuracy and the confusion matrix of its checkpoint (eval.json)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.cifar import from_arrays, load_split
from ..design.model import count_trainable
from ..errors import RunFailed
from ..training.checkpoint import load_model
from ..training.rundir import EvalRecord, RunFiles
from ..training.runtime import resolve_device
from ..training.scoring import predict_logits


class NonFiniteOutput(RunFailed):
    """A model whose outputs are NaN or infinite (a diverged run's weights): it has no accuracy or loss to report."""


def check_finite_logits(logits: Tensor, source: str) -> None:
    """Raise NonFiniteOutput when any logit is NaN or infinite, naming how many images and `source`."""
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        raise NonFiniteOutput(f"{source}: its outputs are not finite (NaN or infinite) for {bad:,} of {len(logits):,} "
                              "images, so it has no accuracy or loss to report: its weights diverged; use a "
                              "checkpoint of an epoch that trained (--checkpoint best or last)")


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts [true class, predicted class]."""
    return torch.bincount(labels.cpu() * num_classes + predictions.cpu(),
                          minlength=num_classes ** 2).view(num_classes, num_classes)


def classification_report(logits: Tensor, labels: Tensor, classes: list[str]) -> EvalRecord:
    """Accuracy, loss, per-class accuracy and the confusion matrix of logits against labels."""
    labels = labels.to(logits.device)
    cm = confusion_matrix(logits.argmax(1), labels, len(classes))
    per_class = (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()
    return EvalRecord(accuracy=cm.diag().sum().item() / max(len(labels), 1),
                      loss=F.cross_entropy(logits, labels).item(), images=len(labels),
                      per_class_accuracy=dict(zip(classes, per_class)), confusion_matrix=cm.tolist())


def plot_confusion(cm: list[list[int]], classes: list[str], out: Path, title: str = "") -> Path:
    """A confusion-matrix heat map PNG with counts in the cells."""
    from .. import plots  # matplotlib only when a figure is drawn

    counts = torch.tensor(cm, dtype=torch.float)
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    fig, ax = plots.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix (test set)")
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    return plots.save(fig, out)


def eval_files(run: str | Path, out_dir: str | Path | None = None) -> RunFiles:
    """Where `budgetnet eval` writes eval.json and its figures: `out_dir`, else the run directory (beside the
    file, for a checkpoint file)."""
    return RunFiles(Path(out_dir) if out_dir else (Path(run) if Path(run).is_dir() else Path(run).parent))


def evaluate_run(run: str | Path, data_dir: str | Path | None = None, device: str = "auto", which: str = "best",
                 out_dir: str | Path | None = None, batch_size: int | None = None) -> EvalRecord:
    """Score a run's checkpoint (or a checkpoint file) on the full test set, `batch_size` images at a time (default:
    the recipe's eval_batch_size); write eval.json and confusion.png."""
    files = eval_files(run, out_dir)
    files.refuse_links()  # before any work: eval.json and the figures go there
    dev = resolve_device(device)
    model, recipe, meta = load_model(run, which, dev)
    x, y, classes = load_split(recipe.data.dataset, "test", data_dir)
    data = from_arrays((x[:0], y[:0]), None, (x, y), classes, recipe.data.dataset, dev)
    logits = predict_logits(model, data.test[0], data, batch_size or recipe.eval_batch_size, dev,
                            precision=recipe.precision, tta=recipe.tta, tta_fraction=recipe.tta_fraction)
    check_finite_logits(logits, f"{run} (checkpoint of epoch {meta.epoch})")
    result = replace(classification_report(logits, data.test[1], classes), run=str(run),
                     checkpoint_epoch=meta.epoch, params=count_trainable(model))
    files.write_eval(result)
    plot_confusion(result.confusion_matrix, classes, files.confusion_plot,
                   f"confusion matrix, test accuracy {result.accuracy:.2%}")
    return result
