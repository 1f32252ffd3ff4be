"""Command-line interface: argument parsing only; every command calls one library function."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from . import __version__, console
from .config import apply_overrides, load_recipe, note_overrides, parse_count, parse_gflops, recipe_names
from .errors import BudgetnetError, UsageError



# ---- params ---------------------------------------------------------------------------------------

def cmd_params(args: argparse.Namespace) -> int:
    from .design.model import design_report

    recipe = load_recipe(args.recipe, args.set)
    result = design_report(recipe.model, parse_count(args.budget) if args.budget else recipe.budget, args.fit,
                           parse_gflops(args.max_gflops) if args.max_gflops is not None else recipe.max_gflops)
    print(json.dumps(result, indent=2) if args.json else console.design_text(result))
    return 0 if result["within_budget"] else 1


# ---- train / eval --------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from .training.loop import train
    from .training.rundir import default_run_dir
    from .training.runtime import from_env

    out = args.resume or args.out or default_run_dir(args.recipe)
    recipe = None if args.resume else note_overrides(load_recipe(args.recipe, args.set), args.set)
    try:
        summary = train(recipe, out, data_dir=args.data, resume=bool(args.resume), progress=not args.quiet,
                        overrides=args.set if args.resume else ())
    except KeyboardInterrupt as e:
        print(str(e) or f"interrupted: the last checkpoint is kept; continue with budgetnet train --resume {out}",
              file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)
    if from_env().is_main:
        text = console.run_text(out, summary.status, summary.final_test_acc)
        print(json.dumps(summary.to_dict(), indent=2) if args.json else text)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.robustness import eval_text, evaluate_all

    result = evaluate_all(args.run, args.data, device=args.device, which=args.checkpoint, out_dir=args.out,
                          corruptions=args.corruptions, calibration=args.calibration, cifar10c_dir=args.cifar10c,
                          severities=tuple(args.severities), limit=args.limit, progress=not args.json)
    print(json.dumps(result.to_dict(), indent=2) if args.json else eval_text(args.run, result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy.export import export_run

    print(console.export_text(export_run(args.run, args.format, args.out, args.checkpoint)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .deploy.predict import Predictor, write_csv

    predictor = Predictor(args.run, args.top_k, args.checkpoint, args.data, args.device)
    errors: list[str] = []
    predictions = predictor.predict(args.inputs, args.batch_size, errors)
    if args.csv:
        summary = f"wrote {write_csv(args.csv, predictions, predictor.top_k):,} predictions to {args.csv}"
    else:
        predictions = list(predictions)
        summary = json.dumps(predictions, indent=2) if args.json else console.predictions_text(predictions)
    for line in predictor.notes + errors:
        print(line, file=sys.stderr)
    print(summary)
    if errors:
        print(f"budgetnet predict: error: {len(errors)} unreadable file{'s' * (len(errors) > 1)} (see above); "
              "the others were classified", file=sys.stderr)
        return 2
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from .deploy.card import model_card

    print(f"wrote {model_card(args.run, args.out)}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    print(console.recipes_text({name: load_recipe(name).description for name in recipe_names()}))
    return 0


# ---- search ----------------------------------------------------------------------------------------

def cmd_search(args: argparse.Namespace) -> int:
    from .workflows.search.errors import SearchInterrupted
    from .workflows.search.report import worker_summary
    from .workflows.search.space import load_space
    from .workflows.search.worker import run_search

    space = load_space(args.space)
    if args.dry_run:
        from .workflows.search.cost import search_cost

        print(search_cost(space, trials=args.trials, total_trials=args.total_trials, budget=args.budget,
                          max_gflops=args.max_gflops, repair=args.repair, device=args.device))
        return 0
    out = args.out or Path("runs") / f"search-{space.name}"
    try:
        study = run_search(space, out, trials=args.trials, total_trials=args.total_trials, storage=args.storage,
                           study_name=args.study, budget=args.budget, sampler=args.sampler, pruner=args.pruner,
                           repair=args.repair, seed=args.seed, heartbeat=args.heartbeat, device=args.device,
                           data_dir=args.data, progress=not args.quiet, max_gflops=args.max_gflops)
    except SearchInterrupted as e:
        print(e, file=sys.stderr)
        return 128 + e.signum
    print(worker_summary(study, out, args.storage))
    return 0


def cmd_search_report(args: argparse.Namespace) -> int:
    from .workflows.search.report import search_report
    from .workflows.search.storage import storage_url

    result = search_report(storage_url(args.out, args.storage), args.out, args.study, args.top)
    print(json.dumps(result, indent=2) if args.json else f"wrote {result['report']}: "
          + ", ".join(f"{v} {k}" for k, v in result["counts"].items()) + f"; Pareto front: trials {result['front']}")
    return 0


# ---- experiment / report -------------------------------------------------------------------------

def cmd_experiment(args: argparse.Namespace) -> int:
    from .workflows.experiment import run_experiment

    return _train_grid(lambda: run_experiment(args.name, args.scale, args.out, jobs=args.jobs, data_dir=args.data,
                                              overrides=args.set, dry_run=args.dry_run), args.dry_run,
                       lambda out: f"wrote {out / 'results.md'}, {out / 'results.csv'} and figures in {out}")


def cmd_study(args: argparse.Namespace) -> int:
    from .study.study import run_study

    return _train_grid(lambda: run_study(args.scale, args.out, args.jobs, args.data, args.set, args.dry_run),
                       args.dry_run, lambda path: f"wrote {path}")


def _train_grid(run, dry_run: bool, wrote) -> int:
    """Run an experiment or the study (run() -> (path, failed runs)) and say what came of it."""
    from .training.rundir import RunFiles

    try:
        path, failed = run()
    except KeyboardInterrupt as e:
        print("interrupted: runs keep their last checkpoints; rerun the same command to resume", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)
    if not dry_run:
        print(wrote(path))
    for r in failed:
        print(f"run {r.name} failed: see {RunFiles(r.path).train_log}; rerun the same command to continue",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from .workflows.report import export_tensorboard, find_runs, report

    runs = find_runs(args.runs)
    print(f"wrote {report(runs, args.out, args.title)}")
    if args.tensorboard:
        print(f"wrote TensorBoard events: tensorboard --logdir {export_tensorboard(runs, args.tensorboard)}")
    return 0


# ---- augment-preview -------------------------------------------------------------------------------

def cmd_augment_preview(args: argparse.Namespace) -> int:
    from .data.augment.preview import preview_test_images
    from .data.policies import parse_policy

    policy = parse_policy(apply_overrides({"name": args.policy}, args.set))
    print(f"wrote {preview_test_images(policy, args.out, args.data, args.images, args.samples, args.seed)}")
    return 0


# ---- parser ----------------------------------------------------------------------------------------

def _recipe_args(p: argparse.ArgumentParser, default: str | None = "seed") -> None:
    p.add_argument("--recipe", default=default, help="shipped recipe name or YAML file (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set optimizer.lr=0.05 (repeatable; YAML values)")


def _grid_args(p: argparse.ArgumentParser, scale: str) -> None:
    """The options of commands that train a grid of runs (experiment, study)."""
    p.add_argument("--scale", default=scale, help="smoke (minutes on a CPU, too small to judge), hour (one GPU "
                                                  "hour), or full (the study's epochs); recorded in the results "
                                                  "(default: %(default)s)")
    p.add_argument("--jobs", type=int, help="runs trained at once (default: one per CUDA device, else 1)")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA or the cache)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key in every run, e.g. --set device=cpu (repeatable; YAML values)")
    p.add_argument("--dry-run", action="store_true", help="list the runs (new, to resume, done) with their cost "
                                                         "measured on this device, then stop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="budgetnet", description=__doc__.split(":")[0])
    parser.add_argument("--version", action="version", version=f"budgetnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help="per-stage parameter table of a design; exit 1 when over either budget")
    _recipe_args(p)
    p.add_argument("--budget", help="trainable-parameter budget, e.g. 5M (default: the recipe's)")
    p.add_argument("--max-gflops", metavar="GFLOP", help="compute budget: forward+backward GFLOP per "
                   "32x32 image, e.g. 0.71 (default: the recipe's max_gflops, none unless set)")
    p.add_argument("--fit", action="store_true", help="widen or narrow C_1 (a list of widths: all together) to the "
                                                      "largest that fits the budget and --max-gflops")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("train", help="train a recipe into a run directory")
    _recipe_args(p, default="demo")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<recipe>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA or the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="test accuracy, per-class accuracy and confusion matrix of a run")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint of a run")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA or the cache)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, help="where eval.json and confusion.png go (default: the run directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--corruptions", action="store_true",
                   help="accuracy under the 15 CIFAR-10-C corruptions (table + corruptions.png); generated ones "
                        "are cached in $XDG_CACHE_HOME/budgetnet/corruptions (~/.cache) for later calls; frost "
                        "needs the photographs of `pip install --no-deps imagecorruptions`, else is skipped")
    p.add_argument("--cifar10c", type=Path, metavar="DIR", help="read the released CIFAR-10-C .npy files from DIR "
                   "instead of generating the corruptions")
    p.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=range(1, 6),
                   metavar="S", help="corruption severities, 1..5 (default: all)")
    p.add_argument("--limit", type=int, metavar="N", help="robustness on the first N test images only (quick runs)")
    p.add_argument("--calibration", action="store_true",
                   help="expected calibration error and reliability.png")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="export a run's model: ONNX, torch.export (.pt2), or standalone model.py + weights")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--format", required=True, choices=["onnx", "pt2", "standalone"])
    p.add_argument("--out", type=Path, required=True, help="directory to write the export into")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint of a run")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="top-k classes of images: PNG/JPEG files (any size; resized), folders, "
                                       ".npy arrays, CIFAR-format batches")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("inputs", nargs="+", metavar="PATH",
                   help="an image file, a folder (its images, recursively), an .npy of uint8 images [N, 32, 32, 3] "
                        "or a pickled CIFAR-format batch (a dict whose 'data' is uint8 [N, 3072]; labels unused)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint of a run")
    p.add_argument("--data", help="folder holding the data set, only for checkpoints of budgetnet 0.1.0, which hold "
                                  "no class names")
    p.add_argument("--device", default="auto", help="auto (a CUDA device if there is one), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    out.add_argument("--csv", type=Path, metavar="FILE", help="write one row per image to FILE (file, index, label, "
                     "probability, then label_i, probability_i of the other top-k) instead of printing them")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("card", help="markdown model card of a run (design, recipe, curves, accuracy, robustness)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", type=Path, help="card file (default: RUN/MODEL_CARD.md); the curves PNG goes beside it")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("recipes", help="list the shipped recipes")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("search", help="search designs and recipes within the budget (Optuna; many workers share "
                                      "one study through --storage)")
    p.add_argument("--space", required=True, help="space file or shipped space name (resnet, tiny, fast-family)")
    p.add_argument("--trials", type=int, help="at most this many trials in this worker")
    p.add_argument("--total-trials", type=int, metavar="N", help="study-wide target for any number of workers: "
                   "stop once N trials are finished or running (with --trials, whichever comes first)")
    p.add_argument("--budget", help="trainable-parameter budget, e.g. 5M (default: the space's recipe budget)")
    p.add_argument("--max-gflops", metavar="GFLOP", help="compute budget: forward+backward GFLOP per 32x32 image, "
                   "e.g. 0.71; a design over it is never trained (default: the space's max_gflops, none unless set)")
    p.add_argument("--dry-run", action="store_true", help="print the trials, epochs and seconds per epoch of the "
                   "smallest and largest design the budgets admit, measured on this device, and the total; write "
                   "nothing")
    p.add_argument("--out", type=Path, help="folder of the trial run directories, shared by the workers so that any "
                   "can resume any trial (default: runs/search-<space>)")
    p.add_argument("--storage", help="database URL, e.g. postgresql+psycopg2://user@host/db (default: "
                                     "$BUDGETNET_STORAGE, else sqlite:///OUT/search.db)")
    p.add_argument("--study", help="study name (default: the space name); rerunning continues the study")
    p.add_argument("--device", help="device of this worker's trials (default: the recipe's); auto: a GPU that no "
                                    "other worker on this machine holds, else the CPU")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random"], help="Optuna sampler (default: %(default)s)")
    p.add_argument("--pruner", default="hyperband", choices=["hyperband", "halving", "median", "none"],
                   help="stops weak trials on their per-epoch validation accuracy, from the space's "
                        "prune_from_epoch on (default: %(default)s)")
    p.add_argument("--repair", default="fit-channels", choices=["fit-channels", "reject"],
                   help="the widths are sampled within the budgets; when even their ranges' low ends are over, train "
                        "the widest that fit (scaled together), or reject the design untrained (default: %(default)s)")
    p.add_argument("--seed", type=int, help="sampler seed (leave unset when several workers share a study)")
    p.add_argument("--heartbeat", type=int, default=60,
                   help="seconds between worker heartbeats; a trial silent for twice that is marked FAIL and "
                        "queued to resume (default: %(default)s)")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA or the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("search-report", help="top designs, Pareto front and importances of a study: OUT/search.md")
    p.add_argument("--out", type=Path, required=True, help="where search.md and the plots go")
    p.add_argument("--storage", help="database URL (default: $BUDGETNET_STORAGE, else sqlite:///OUT/search.db)")
    p.add_argument("--study", help="study name (default: the only study in the storage)")
    p.add_argument("--top", type=int, default=10, help="designs in the table (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_search_report)

    p = sub.add_parser("experiment", help="train a grid of recipe variations (skipping finished runs, resuming "
                                          "killed ones) and write results.md, results.csv and figures")
    p.add_argument("name", help="shipped experiment (batch-size, lr-schedule, augmentation, optimizer, final) "
                                "or experiment YAML file")
    p.add_argument("--out", type=Path, help="experiment directory (default: runs/<name>-<scale>)")
    _grid_args(p, "full")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("study", help="all five experiments of the study, then STUDY.md: its published numbers "
                                     "beside ours with a verdict per row, and figures")
    p.add_argument("--out", type=Path, help="study directory (default: runs/study-<scale>)")
    _grid_args(p, "smoke")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="compare run directories: report.md with a table, curves, learning rates "
                                      "and parameters vs accuracy")
    p.add_argument("runs", nargs="+", help="run directories, or experiment directories (all runs below them)")
    p.add_argument("--out", type=Path, required=True, help="where report.md and the figures go")
    p.add_argument("--title", default="run comparison", help="title of the report and figures")
    p.add_argument("--tensorboard", type=Path, metavar="LOG_DIR",
                   help="also write the runs' metrics as TensorBoard events there (pip install tensorboard)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("augment-preview", help="PNG grid of CIFAR-10 test images and augmented samples of a policy")
    p.add_argument("--policy", required=True, help="augment policy name, e.g. augmix, autoaugment, crop")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the policy, e.g. --set severity=5 (repeatable; YAML values)")
    p.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA or the cache)")
    p.add_argument("--images", type=int, default=6, help="rows: random test images (default: %(default)s)")
    p.add_argument("--samples", type=int, default=8, help="augmented samples per image (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="picks the images and the augmentations")
    p.set_defaults(func=cmd_augment_preview)
    return parser


def exit_code(error: Exception) -> int | None:
    """2 when the input was wrong (fix the command and rerun), 1 when the work failed for a stated reason (out of
    memory, a full disk, a diverged run), None for anything else: a bug, whose traceback should show.

    Besides budgetnet's own errors, an OSError is the file system's answer (a missing file: exit 2, a full disk or
    a refused write: exit 1, its message names the path) and torch's OutOfMemoryError a failed run; torch's
    other errors (a shape mismatch, a compile failure) are RuntimeErrors and keep their tracebacks."""
    import torch

    if isinstance(error, (UsageError, FileNotFoundError)):
        return 2
    if isinstance(error, (BudgetnetError, torch.OutOfMemoryError, OSError)):
        return 1
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:
        code = exit_code(e)
        if code is None or os.environ.get("BUDGETNET_DEBUG"):
            raise
        print(f"budgetnet {args.command}: {'error' if code == 2 else 'failed'}: {e}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"budgetnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
