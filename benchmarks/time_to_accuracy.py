"""Time to accuracy: train a recipe, print wall seconds and test accuracy per epoch, then the final figures.

    python benchmarks/time_to_accuracy.py --recipe fast [--set epochs=10 ...] [--json]

Seconds are training time only (the loop's own clock: evaluation and compilation outside the epoch
are excluded; compilation inside the first epoch is included; nothing is written). Test accuracy is evaluated
after every epoch (eval_every=1 unless --set overrides it), with the recipe's TTA and EMA weights.
"""
from __future__ import annotations

import argparse
import json
import sys

from budgetnet.config import load_recipe
from budgetnet.training.loop import train_without_rundir
from budgetnet.training.provenance import device_name
from budgetnet.training.rundir import MetricRow
from budgetnet.training.runtime import resolve_device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", required=True, help="shipped recipe name or YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)

    recipe = load_recipe(args.recipe, ["eval_every=1", *args.set])
    device = resolve_device(recipe.device)
    rows: list[MetricRow] = []
    summary = train_without_rundir(recipe, data_dir=args.data, on_epoch=rows.append)
    elapsed = 0.0
    if not args.json:
        print(f"{'epoch':>5}  {'seconds':>8}  {'total s':>8}  {'train loss':>10}  {'test acc':>8}")
        for row in rows:
            elapsed += row.seconds
            acc = f"{row.test_acc:.4f}" if row.test_acc is not None else "-"
            print(f"{row.epoch:>5}  {row.seconds:>8.1f}  {elapsed:>8.1f}  {row.train_loss:>10.4f}  {acc:>8}")
    if args.json:
        print(json.dumps({"recipe": args.recipe, "device": device_name(device), "params": summary.params,
                          "epochs": summary.epochs_done, "train_seconds": round(summary.train_seconds, 2),
                          "accuracy": summary.final_test_acc}))
    else:
        print(f"\nrecipe {args.recipe} on {device_name(device)}: {summary.params:,} parameters, "
              f"{summary.epochs_done} epochs, {summary.train_seconds:.1f} s of training, "
              f"final test accuracy {summary.final_test_acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
