"""A markdown model card of a run: design, parameters, recipe, curves, accuracy, robustness, use and limits."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from . import plots
from .checkpoint import CheckpointError, load_model
from .rundir import read_metrics


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def model_card(run: str | Path, out: str | Path | None = None) -> Path:
    """Write RUN/MODEL_CARD.md (or `out`) and its curves PNG beside it; return the card's path."""
    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"{run} is not a run directory (give the folder `budgetnet train --out` wrote)")
    _, recipe, _ = load_model(run, "best")
    out = Path(out) if out else run / "MODEL_CARD.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary, evaluation = _json(run / "summary.json"), _json(run / "eval.json")
    rows = read_metrics(run)
    spec = recipe.model

    table = ["| layer | output | channels | kernel | shortcut | blocks | params |", "|---|---|---|---|---|---|---|"]
    table += [f"| {r['layer']} | {r['output']} | {r['channels']} | {r['kernel']} | {r['shortcut']} | {r['blocks']} "
              f"| {r['params']:,} |" for r in spec.stage_table()]
    lines = [f"# Model card: {run.name}", "",
             f"A {spec.block}-block residual network for {recipe.data.dataset} (32x32 RGB, "
             f"{spec.num_classes} classes), trained with budgetnet.", "",
             "## Design", "", *table, "",
             f"Trainable parameters: **{spec.count_params():,}**.", ""]
    lines += ["## Accuracy", ""]
    if "accuracy" in evaluation:
        lines.append(f"- test accuracy {evaluation['accuracy']:.2%}, loss {evaluation['loss']:.4f} "
                     f"({evaluation['images']:,} images, checkpoint of epoch {evaluation['checkpoint_epoch']}; "
                     "`budgetnet eval`)")
        if "ece" in evaluation:
            lines.append(f"- expected calibration error {evaluation['ece']:.4f} "
                         f"({evaluation.get('ece_images', '?')} images, 15 bins)")
    if summary:
        lines.append(f"- training: {summary.get('status')}, {summary.get('epochs_done')} of "
                     f"{summary.get('epochs')} epochs, best test accuracy {summary.get('best_test_acc')} "
                     f"(epoch {summary.get('best_epoch')}), {summary.get('train_seconds', 0):.0f} s on "
                     f"{summary.get('device')}")
    if not ("accuracy" in evaluation or summary):
        lines.append(f"Not measured: run `budgetnet eval {run}`.")
    if rows:
        curves = plots.plot_curves({run.name: [rows]}, ["train_loss", "test_loss", "train_acc", "test_acc"],
                                   out.with_name(out.stem + "_curves.png"), f"{run.name}: loss and accuracy per epoch")
        lines += ["", f"![loss and accuracy per epoch]({curves.name})"]
    lines += ["", "## Robustness", ""]
    if "per_corruption" in evaluation:
        lines.append(f"Mean accuracy under {len(evaluation['per_corruption'])} CIFAR-10-C corruptions "
                     f"x severities ({evaluation.get('corruption_source', 'generated')}, "
                     f"{evaluation.get('corruption_images', '?')} images each): "
                     f"**{evaluation['corruption_accuracy']:.2%}**.")
        lines += ["", "| corruption | 1 | 2 | 3 | 4 | 5 | mean |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | " + " | ".join(f"{acc[k]:.1%}" if k in acc else "-"
                                             for k in ("1", "2", "3", "4", "5", "mean")) + " |"
                  for name, acc in evaluation["per_corruption"].items()]
    else:
        lines.append(f"Not measured: run `budgetnet eval {run} --corruptions --calibration`.")
    lines += ["", "## Recipe", "", "```yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False).rstrip(), "```",
              "", "## Intended use and limitations", "",
              "- Research and teaching: comparing residual designs and training recipes under a parameter budget.",
              "- Inputs are 32x32 RGB photos of the 10 CIFAR-10 classes; anything else gets one of those labels "
              "anyway, with no reliable notion of \"none of these\".",
              "- Trained and tested on a re-encoded (JPEG) copy of CIFAR-10: accuracy is not strictly comparable "
              "to published figures, and the model has seen JPEG artefacts.",
              "- Not for decisions about people or safety-relevant uses.", ""]
    out.write_text("\n".join(lines))
    return out
