"""A markdown model card of a run: design, parameters, recipe, curves, accuracy, robustness, use and limits."""
from __future__ import annotations

from pathlib import Path

import yaml

from .. import atomic, plots
from ..config import Recipe
from ..data.augment import build_augment
from ..data.cifar import split_size
from ..training.checkpoint import CheckpointError, load_model
from ..training.rundir import RunFiles


def training_loss(recipe: Recipe) -> str:
    """The loss the recipe trains with, in words (what `train_loss` in metrics.jsonl measures)."""
    loss = "cross-entropy" + (f" with label smoothing {recipe.label_smoothing:g}" if recipe.label_smoothing else "")
    augment = build_augment(recipe.augment, recipe.model.num_classes)
    if augment.soft_targets:
        loss += " on mixed (soft) targets"
    if augment.num_views > 1:
        loss += (f" on the clean view + {augment.jsd_lambda:g} x the Jensen-Shannon consistency of the clean and "
                 "two AugMix views")
    return loss


def model_card(run: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN/MODEL_CARD.md (or `out`) and its curves PNG beside it; return the card's path."""
    run = Path(run)
    files = RunFiles(run)
    if not run.is_dir():
        raise CheckpointError(f"{run} is not a run directory (give the folder `budgetnet train --out` wrote)")
    files.refuse_links()
    _, recipe, meta = load_model(run, "best")
    classes = meta.classes
    out = Path(out) if out else files.card
    out.parent.mkdir(parents=True, exist_ok=True)
    summary, evaluation, rows = files.read_summary(), files.read_eval(), files.read_metrics()
    spec = recipe.model

    table = ["| layer | output | channels | kernel | shortcut | blocks | params |", "|---|---|---|---|---|---|---|"]
    table += [f"| {r['layer']} | {r['output']} | {r['channels']} | {r['kernel']} | {r['shortcut']} | {r['blocks']} "
              f"| {r['params']:,} |" for r in spec.stage_table()]
    data = recipe.data
    size = f"{spec.image_size}x{spec.image_size}"
    lines = [f"# Model card: {run.name}", "",
             f"A {spec.block}-block residual network for {data.dataset} ({size} RGB, {spec.num_classes} classes), "
             "trained with budgetnet.", "",
             f"Classes, in logit order: {', '.join(classes)}." if classes else
             f"Class names: not stored (a checkpoint of {meta.written_by}); logit i is class i of {data.dataset}.",
             "",
             "## Design", "", *table, "",
             f"Trainable parameters: **{spec.count_params():,}**.", "",
             "## Data and training", "",
             f"- trained on {split_size(data, 'train'):,} images of {data.dataset}'s training split"
             + (f", {data.val_size:,} held out for validation" if data.val_size else "")
             + f"; tested on {split_size(data, 'test'):,} test images",
             f"- training loss: {training_loss(recipe)}", ""]
    lines += ["## Accuracy", ""]
    evaluated = evaluation is not None and evaluation.accuracy is not None
    if evaluated:
        lines.append(f"- test accuracy {evaluation.accuracy:.2%}, loss {evaluation.loss:.4f} "
                     f"({evaluation.images:,} images, checkpoint of epoch {evaluation.checkpoint_epoch}; "
                     "`budgetnet eval`)")
        if evaluation.ece is not None:
            lines.append(f"- expected calibration error {evaluation.ece:.4f} "
                         f"({_known(evaluation.ece_images)} images, 15 bins)")
    if summary is not None:
        lines.append(f"- training: {summary.status}, {summary.epochs_done} of {summary.epochs} epochs, best test "
                     f"accuracy {summary.best_test_acc} (epoch {summary.best_epoch}), {summary.train_seconds or 0:.0f} "
                     f"s on {summary.device}")
    if not (evaluated or summary is not None):
        lines.append(f"Not measured: run `budgetnet eval {run}`.")
    if rows:
        curves = plots.plot_curves({run.name: [rows]}, ["train_loss", "test_loss", "train_acc", "test_acc"],
                                   out.with_name(out.stem + "_curves.png"), f"{run.name}: loss and accuracy per epoch")
        lines += ["", f"![loss and accuracy per epoch]({curves.name})"]
    lines += ["", "## Robustness", ""]
    if evaluation is not None and evaluation.per_corruption is not None:
        lines.append(f"Mean accuracy under {len(evaluation.per_corruption)} CIFAR-10-C corruptions "
                     f"x severities ({evaluation.corruption_source or 'generated'}, "
                     f"{_known(evaluation.corruption_images)} images each): "
                     f"**{evaluation.corruption_accuracy:.2%}**.")
        lines += ["", "| corruption | 1 | 2 | 3 | 4 | 5 | mean |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | " + " | ".join(f"{acc[k]:.1%}" if k in acc else "-"
                                             for k in ("1", "2", "3", "4", "5", "mean")) + " |"
                  for name, acc in evaluation.per_corruption.items()]
    else:
        lines.append(f"Not measured: run `budgetnet eval {run} --corruptions --calibration`.")
    lines += ["", "## Recipe", "", "The resolved recipe (its free-text description left out: the facts above are measured "
              "from the run, the description may predate `--set` overrides).", "", "```yaml",
              yaml.safe_dump({k: v for k, v in recipe.to_dict().items() if k != "description"},
                             sort_keys=False).rstrip(), "```",
              "", "## Intended use and limitations", "",
              "- Research and teaching: comparing residual designs and training recipes under a parameter budget.",
              f"- Inputs are {size} RGB photos of the {spec.num_classes} {data.dataset} classes; anything else gets "
              "one of those labels anyway, with no reliable notion of \"none of these\".",
              f"- Accuracy depends on the copy of {data.dataset} it was trained and tested on: budgetnet notes at "
              "training time when a copy differs from the official release (e.g. a re-encoded JPEG copy), and "
              "figures on such a copy are not strictly comparable to published ones.",
              "- Not for decisions about people or safety-relevant uses.", ""]
    atomic.write_text(out, "\n".join(lines))
    return out


def _known(count: int | None) -> str:
    return "?" if count is None else str(count)
