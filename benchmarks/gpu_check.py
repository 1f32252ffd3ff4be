"""Every GPU figure of the project in one job: stages under one deadline, a markdown table and JSON under --out.

    benchmarks/gpu_job.sh                                            # the GPU machine's one command (see it)
    python benchmarks/gpu_check.py --out DIR [--npz .device/cifar10-jpeg.npz] [--deadline 480]
    python benchmarks/gpu_check.py --out DIR --stage seed-fast      # one stage alone, with its full seed count
    python benchmarks/gpu_check.py --out DIR --stage levers --stage airbench --pairs airbench94_muon:small-muon
    python benchmarks/gpu_check.py --out DIR --smoke                # every stage for a few steps on the CPU
    python benchmarks/gpu_check.py --out DIR --stage seed-steps --device cpu --deadline 900   # the real thing, CPU

Stages, in order (seconds are the share of the deadline each is planned to take on one H100/H200):
    throughput  the study's model at batch 128: plain DataLoader loop vs budgetnet in fp32 and bf16, bf16 at
                batches 512 and 1024, bf16 under torch.compile reduce-overhead (CUDA graphs); FLOPs, TFLOP/s,
                peak memory. Targets: >= 5x the plain loop in the recipe's default precision, bf16 no slower
                than fp32, larger batches faster still.
    augmix      the study's AugMix+JSD step vs crop+flip, per source image. Target: at most 3.3x.
    seed-steps  the study's `seed` recipe (AugMix+JSD, lr 0.1) for 50 steps of 128 images: finite losses,
                weights and momentum (any non-finite gradient would have made them non-finite).
    seed-fast   the `seed-fast` recipe, 1 seed (2 with --stage): >= 92.4% within 120 s of training. Its time to
                90% only with --stage (a TTA evaluation after every epoch, outside the training clock).
    recipes     `small` and `cpu` (RECIPES), 2 seeds (4 with --stage): test accuracy, seconds and images/s of each
                epoch, on all 50,000 training images. Their targets are on the CPU: this is their accuracy in seconds.
    levers      issue 26's levers on the validation split (data.val_size=5000): `small` and `small` with each
                of hiverge's levers not yet measured, then with all of them, and `fast` beside small's Muon
                training on fast's network for fewer epochs (LEVERS), 4 seeds each: validation and test
                accuracy, seconds, PFLOP.
                Only with --stage levers (a decision's measurement, not a target).
    airbench    vs_airbench.py: airbench94 beside `small`, airbench95 beside `fast`, airbench94_muon.py (from
                --airbench94-muon; skipped without it) beside `small`, `small-muon` and `small-lean`, 1 warm seed
                each after a cold run of another seed (3 with --stage): at least airbench's accuracy in less time;
                `fast` cold within 2x of warm (--pairs chooses the pairs).
                Both sides train with no run directory; train_seconds beside the one clock. airbench94_muon runs
                last and compiles with max-autotune in its cold run: in a whole job it may be cut by the deadline.
    fidelity    issue 27's trial length: 10 designs of the fast-family space (within its budgets), each trained on
                the validation split for 2 and 4 epochs, its trial length and the full recipe's; the Spearman
                rank agreement of each shorter length with the full one. Needs optuna (gpu_job.sh carries it).
                Only with --stage fidelity.
    best        the `best` recipe, 1 seed (2 with --stage): >= 93.5% within 240 s of training. Only with
                --stage best (120 epochs and a cold compile do not fit a share of the whole job).

Every training stage records each epoch as it finishes (seconds, images/s, accuracy when evaluated), so a stage
cut by its deadline keeps its epochs. Both loops of a throughput comparison run under the same backend settings
(budgetnet.training.runtime.configure_backend, set before the first stage: on CUDA cudnn.benchmark and TF32, so the
"fp32" rows are TF32, as the header says). A reduce-overhead row says whether Inductor ran CUDA graphs.

One deadline (--deadline, default 8 minutes) covers the whole job: each stage gets the remaining time in
proportion to its planned share, and a stage that runs out is stopped (SIGALRM raises StageTimeout, a
BaseException that torch.compile does not rewrap) with what it measured kept. results.md and results.json under
--out are rewritten after every stage, so a killed job leaves its figures. benchmarks/gpu_job.sh holds the exact
command for the GPU machine (wheels, PYTHONPATH=src, the data rebuild, an outer timeout).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from budgetnet.config import DataConfig, load_recipe
from budgetnet.data.cifar import Data, load_data
from budgetnet.training import checkpoint
from budgetnet.training.loop import train
from budgetnet.training.provenance import device_name
from budgetnet.training.rundir import MetricRow
from budgetnet.training.runtime import configure_backend

import train_throughput
import vs_airbench
from tables import markdown


class StageTimeout(BaseException):
    """The stage's share of the deadline is spent (a BaseException: code that catches Exception, torch.compile's
    error wrapping included, lets it through)."""


class StopAfterEpoch(Exception):
    """Raised from on_epoch to end a run early (seed-steps trains one epoch of a 1200-epoch schedule)."""


@dataclass
class StageContext:
    """What every stage needs: the device, the data, the seed count and whether this is a CPU smoke run."""
    device: torch.device
    data: Data
    smoke: bool
    seeds: int | None  # None: the stage's own count for a whole-job run; --stage gives its full count
    full: bool
    muon_file: Path = vs_airbench.MUON_FILE  # airbench94_muon.py for the airbench stage
    pairs: list[tuple[str, str]] | None = None  # the airbench stage's pairs (None: vs_airbench's for the device)
    data_dir: str | Path | None = None  # where ctx.data came from (the levers stage loads a validation split)


@dataclass
class Stage:
    name: str
    planned_s: float                      # share of a 9-minute job on one H100/H200
    run: Callable[[StageContext, dict], None]  # appends to record["rows"] as each measurement finishes
    judge: Callable[[StageContext, dict], None] = lambda ctx, record: None  # record["checks"] from the rows there are
    columns: list[tuple[str, str, str]] | None = None  # the rows' table (default: every key)
    seeds: int = 1                        # seeds in a whole-job run
    full_seeds: int = 1                   # seeds with --stage NAME
    smoke: list[str] = field(default_factory=list)  # recipe overrides under --smoke


def check(record: dict, target: str, measured: str, met: bool) -> None:
    record["checks"].append({"target": target, "measured": measured, "met": bool(met)})


def seeds_of(ctx: StageContext, stage: Stage) -> int:
    return ctx.seeds or (1 if ctx.smoke else stage.full_seeds if ctx.full else stage.seeds)


# ---- stages -------------------------------------------------------------------------------------------------

TINY_SEED = ["model.channels=4"]  # the study's ResNet-18 at C_1=4: the same code path in a second on the CPU


def arrays(ctx: StageContext) -> tuple[np.ndarray, np.ndarray]:
    return ctx.data.train[0].cpu().numpy(), ctx.data.train[1].cpu().numpy()


def stage_throughput(ctx: StageContext, record: dict) -> None:
    images, labels = arrays(ctx)
    steps, warmup = (2, 1) if ctx.smoke else (100, 20)
    batches, modes = ([], []) if ctx.smoke else ([512, 1024], ["reduce-overhead"])
    if ctx.smoke:
        record["notes"].append("--smoke: no larger batches and no compile (compiling takes minutes on a CPU)")
    train_throughput.measure(images, labels, ctx.device, steps, warmup, batch_sizes=batches, compile_modes=modes,
                             on_row=record["rows"].append, model_overrides=TINY_SEED if ctx.smoke else [])


def judge_throughput(ctx: StageContext, record: dict) -> None:
    rows = record["rows"]
    b128 = {r["loop"] + r["precision"]: r["images_per_s"] for r in rows if r["batch"] == 128}
    plain = b128.get("plain (DataLoader, 2 workers)fp32")
    default = "budgetnet" + ("bf16" if ctx.device.type == "cuda" else "fp32")  # the seed recipe's precision=auto
    if plain and default in b128:
        check(record, "budgetnet >= 5x the plain loop at batch 128, the recipe's default precision (compile off)",
              f"{b128[default] / plain:.2f}x", b128[default] >= 5 * plain)
    ours = [r for r in rows if r["batch"] == 128 and r["loop"] != "plain (DataLoader, 2 workers)"]
    if plain and ours:
        fastest = max(ours, key=lambda r: r["images_per_s"])
        check(record, "budgetnet >= 5x the plain loop at batch 128, any option measured",
              f"{fastest['images_per_s'] / plain:.2f}x ({fastest['loop']}, {fastest['precision']})",
              fastest["images_per_s"] >= 5 * plain)
    if "budgetnetbf16" in b128 and "budgetnetfp32" in b128:
        check(record, "bf16 no slower than fp32 (batch 128)", f"{b128['budgetnetbf16'] / b128['budgetnetfp32']:.2f}x",
              b128["budgetnetbf16"] >= b128["budgetnetfp32"])
    for r in rows:
        if r["batch"] > 128 and "budgetnetbf16" in b128:
            check(record, f"batch {r['batch']} faster than batch 128 (bf16)",
                  f"{r['images_per_s'] / b128['budgetnetbf16']:.2f}x", r["images_per_s"] > b128["budgetnetbf16"])


def stage_augmix(ctx: StageContext, record: dict) -> None:
    images, labels = arrays(ctx)
    train_throughput.augmix_cost(images, labels, ctx.device, 2 if ctx.smoke else 60, on_row=record["rows"].append,
                                 model_overrides=TINY_SEED if ctx.smoke else [])


def judge_augmix(ctx: StageContext, record: dict) -> None:
    for r in record["rows"]:
        if "cost_vs_crop_flip" in r:
            check(record, "AugMix+JSD step <= 3.3x a crop+flip step per source image",
                  f"{r['cost_vs_crop_flip']:.2f}x", r["cost_vs_crop_flip"] <= 3.3)


def stage_seed_steps(ctx: StageContext, record: dict) -> None:
    steps, batch = (2, 16) if ctx.smoke else (50, 128)
    n = steps * batch
    data = replace(ctx.data, train=(ctx.data.train[0][:n], ctx.data.train[1][:n]),
                   test=(ctx.data.test[0][:batch], ctx.data.test[1][:batch]))
    recipe = load_recipe("seed", [f"device={ctx.device}", f"batch_size={batch}", "checkpoint_every=1",
                                  *(TINY_SEED if ctx.smoke else [])])
    epochs: list[MetricRow] = []

    def stop(row: MetricRow) -> None:
        epochs.append(row)
        raise StopAfterEpoch

    with tempfile.TemporaryDirectory() as out:
        try:  # one epoch of `steps` steps at the start of the study's 1200-epoch schedule
            train(recipe, out, progress=False, data=data, on_epoch=stop)
        except StopAfterEpoch:
            pass
        state = checkpoint.load(checkpoint.resolve(out, "last"))
    tensors = [*state["model"].values(),
               *(v for s in state["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v))]
    finite = all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
    row = epochs[0]
    record["rows"].append({"recipe": "seed", "steps": steps, "batch": batch, "train_loss": row.train_loss,
                           "seconds": row.seconds, "weights_and_momentum_finite": finite})


def judge_seed_steps(ctx: StageContext, record: dict) -> None:
    for r in record["rows"]:
        check(record, f"the study's recipe: {r['steps']} steps of {r['batch']} images with finite losses and gradients",
              f"mean loss {r['train_loss']:.3f}, weights and momentum {'finite' if r['weights_and_momentum_finite'] else 'NOT finite'}",
              math.isfinite(r["train_loss"]) and r["weights_and_momentum_finite"])


def train_seeds(ctx: StageContext, stage: Stage, record: dict, recipe_name: str, eval_every: int | None = None) -> list[dict]:
    """Train a recipe for the stage's seeds with no run directory. Each epoch is a row as it finishes (seconds,
    images/s, test accuracy when evaluated, training seconds so far), so a deadline keeps them; each finished run
    adds a row with "epoch": "run" (accuracy, the loop's train_seconds, the one clock's seconds, time to 90% when
    evaluated every epoch). The first run in the process is not a warm-up: its first epoch includes cuDNN
    autotuning (and compilation when the recipe compiles)."""
    recipe = load_recipe(recipe_name, [f"device={ctx.device}", *(stage.smoke if ctx.smoke else [])])
    for seed in range(seeds_of(ctx, stage)):
        epochs: list[MetricRow] = []

        def on_epoch(row: MetricRow) -> None:
            epochs.append(row)
            record["rows"].append({"recipe": recipe_name, "seed": seed, "epoch": row.epoch, "seconds": row.seconds,
                                   "images_per_s": row.images_per_s, "test_acc": row.test_acc,
                                   "train_seconds": sum(r.seconds for r in epochs)})

        result = vs_airbench.run_budgetnet(recipe, ctx.data, ctx.device, seed, eval_every, on_epoch)
        elapsed, to_90 = 0.0, None
        for row in epochs:
            elapsed += row.seconds
            if to_90 is None and (row.test_acc or 0) >= 0.90:
                to_90 = elapsed
        record["rows"].append({"recipe": recipe_name, "seed": seed, "epoch": "run", **result, "epochs": len(epochs),
                               "train_seconds_to_90": to_90})
    return record["rows"]


def accuracy_check(record: dict, rows: list[dict], target_acc: float, limit_s: float) -> None:
    rows = [r for r in rows if r["epoch"] == "run"]
    if not rows:
        return
    acc = sum(r["accuracy"] for r in rows) / len(rows)
    secs = sum(r["train_seconds"] for r in rows) / len(rows)
    check(record, f">= {target_acc:.1%} test accuracy within {limit_s:.0f} s of training (mean of {len(rows)} seeds)",
          f"{acc:.2%} in {secs:.1f} s", acc >= target_acc and secs <= limit_s)


def stage_seed_fast(ctx: StageContext, record: dict) -> None:
    if not ctx.full:
        record["notes"].append("time to 90% only with --stage seed-fast (a TTA evaluation after every epoch)")
    train_seeds(ctx, STAGES["seed-fast"], record, "seed-fast", eval_every=1 if ctx.full else None)


def judge_seed_fast(ctx: StageContext, record: dict) -> None:
    accuracy_check(record, record["rows"], 0.924, 120)


# issue 26's levers from hiverge/cifar10-speedrun, measured on the CPU with one or two seeds (RESULTS.md: each
# within the seed spread of its base), here with 4: (name, recipe, overrides), each trained on the validation split
# beside its base. Its 7.59 epochs of batch 1536 with its retuned hyperparameters are `small-lean` (`small` trained
# as hiverge trains it) at hiverge's length, with TTA on every image.
HIVERGE_BATCH = ["epochs=7.59", "tta_fraction=null"]  # overrides of small-lean
HIVERGE_JITTER = ["augment=[{name: flip, mode: alternate}, {name: crop, padding: 2, padding_mode: reflect}, "
                  "{name: brightness_contrast}]"]
HIVERGE_TTA = ["tta_fraction=0.25"]
FAST_NET = ["model.channels=[128, 384, 384]", "model.residual=true"]  # fast's widths, a shortcut per stage
LEVERS = [
    ("small", "small", []),
    ("small, brightness and contrast jitter (hiverge)", "small", HIVERGE_JITTER),
    ("small, TTA on the least confident 25% (hiverge)", "small", HIVERGE_TTA),
    ("small, 7.59 epochs of batch 1536 with hiverge's hyperparameters", "small-lean", HIVERGE_BATCH),
    # with SiLU, measured alone before (RESULTS.md); budgetnet's also follows the stem, where hiverge keeps GELU
    ("small, all of hiverge's levers", "small-lean",
     [*HIVERGE_BATCH, *HIVERGE_JITTER, *HIVERGE_TTA, "model.activation=silu"]),
    # fast's target is 0.8x airbench95's FLOPs: small's Muon training on fast's network (1.808 GFLOP an image); on the
    # CPU its 11.5 epochs overfit and scored below small itself (RESULTS.md): these rows say whether fewer epochs or no
    # shortcuts help before any retuning
    ("fast", "fast", []),
    ("small's training on fast's network, 11.5 epochs", "small", [*FAST_NET, "epochs=11.5"]),
    ("small's training on fast's network, 10 epochs", "small", [*FAST_NET, "epochs=10"]),
    ("small's training on fast's network without shortcuts, 11.5 epochs", "small",
     [*FAST_NET, "model.residual=false", "epochs=11.5"]),
]
VAL_SIZE = 5000


def validation_data(ctx: StageContext) -> Data:
    """ctx's data with its last VAL_SIZE training images held out (random images under --smoke)."""
    if not ctx.smoke:
        return load_data(DataConfig(val_size=VAL_SIZE), ctx.data_dir, ctx.device, note=False)
    (x, y), n = ctx.data.train, len(ctx.data.train[0]) // 4
    return replace(ctx.data, train=(x[:-n], y[:-n]), val=(x[-n:], y[-n:]))


def stage_levers(ctx: StageContext, record: dict) -> None:
    data = validation_data(ctx)
    runs = record.setdefault("runs", [])
    for name, recipe_name, overrides in LEVERS:
        recipe = load_recipe(recipe_name, [f"device={ctx.device}", f"data.val_size={VAL_SIZE}", *overrides,
                                           *(vs_airbench.SMOKE if ctx.smoke else [])])
        for seed in range(seeds_of(ctx, STAGES["levers"])):
            last: list[MetricRow] = []
            result = vs_airbench.run_budgetnet(recipe, data, ctx.device, seed, on_epoch=last.append)
            runs.append({"lever": name, "seed": seed, "val_acc": last[-1].val_acc, "test_acc": result["accuracy"],
                         "train_seconds": result["train_seconds"], "pflop": result["pflop"]})
            record["rows"] = lever_rows(runs)


def lever_rows(runs: list[dict]) -> list[dict]:
    """One row per lever: the mean over its seeds of validation and test accuracy and training seconds."""
    rows = []
    for name in dict.fromkeys(r["lever"] for r in runs):
        mine = [r for r in runs if r["lever"] == name]
        mean = lambda key: sum(r[key] for r in mine) / len(mine)  # noqa: E731
        rows.append({"lever": name, "seeds": len(mine), "val_acc": mean("val_acc"),
                     "val_spread": max(r["val_acc"] for r in mine) - min(r["val_acc"] for r in mine),
                     "test_acc": mean("test_acc"), "train_seconds": mean("train_seconds"), "pflop": mine[0]["pflop"]})
    return rows


LEVER_COLUMNS = [("lever", "lever", ""), ("seeds", "seeds", ""), ("val acc (mean)", "val_acc", ".2%"),
                 ("val max-min", "val_spread", ".2%"), ("test acc (mean)", "test_acc", ".2%"),
                 ("train s (mean)", "train_seconds", ".2f"), ("PFLOP a run", "pflop", ".4g")]


def stage_airbench(ctx: StageContext, record: dict) -> None:
    runs = record.setdefault("runs", [])
    wanted = ctx.pairs or list(vs_airbench.DEFAULT_PAIRS["cuda"])
    pairs = vs_airbench.available_pairs(wanted, ctx.muon_file)
    if len(pairs) < len(wanted):
        record["notes"].append(vs_airbench.missing_muon_file(ctx.muon_file))

    def on_run(run: dict) -> None:
        runs.append(run)
        if run["run"] == "smoke":
            record["notes"].append(f"airbench's data files hold our {run['checked_images']:,} training images "
                                   "(read back with airbench.CifarLoader)")
        record["rows"] = vs_airbench.pair_rows([r for r in runs if "accuracy" in r], pairs)

    with tempfile.TemporaryDirectory() as tmp:
        vs_airbench.compare(pairs, ctx.data, ctx.device, seeds_of(ctx, STAGES["airbench"]), Path(tmp) / "cifar10",
                            on_run=on_run, smoke=ctx.smoke, muon_file=ctx.muon_file)


def judge_airbench(ctx: StageContext, record: dict) -> None:
    for row in record["rows"]:
        if "target_met" in row:
            check(record, f"{row['system']}: at least {row['vs']}'s accuracy in less time",
                  f"{row['accuracy_gain']:+.2%}, {row['time_ratio']:.2f}x the time", row["target_met"])
        if row["system"] == "fast" and row["cold_seconds"] and row["seconds"]:
            check(record, "fast: a cold first run within 2x of a warm one", f"{row['cold_seconds'] / row['seconds']:.2f}x",
                  row["cold_seconds"] <= 2 * row["seconds"])


# issue 27: the trial lengths (epochs) tried beside the space's own and the full recipe's, on this many designs
FIDELITY_SPACE, FIDELITY_DESIGNS, FIDELITY_LENGTHS = "fast-family", 10, (2, 4)


def stage_fidelity(ctx: StageContext, record: dict) -> None:
    """FIDELITY_DESIGNS designs drawn from the space within its budgets, each trained on the validation split for
    FIDELITY_LENGTHS, the space's trial length and the full recipe's epochs; each row's "spearman" is the rank
    agreement of that length with the full one."""
    from budgetnet.workflows.search.space import describe, design_points, load_space, trial_designs
    space = load_space(FIDELITY_SPACE)
    points, _ = design_points(space, limit=4 * FIDELITY_DESIGNS, seed=0)
    designs = [narrowest for narrowest, _ in trial_designs(space, None, None, "reject", points[2:])]  # random draws
    designs = designs[:2 if ctx.smoke else FIDELITY_DESIGNS]
    full = load_recipe("small").epochs  # the space trains small's recipe, shortened to its trial length
    lengths = sorted({*FIDELITY_LENGTHS, designs[0].epochs, full})
    data = validation_data(ctx)
    runs = record.setdefault("runs", [])
    for i, design in enumerate(designs):
        for epochs in lengths:
            recipe = load_recipe(design.to_dict(), [f"device={ctx.device}", f"epochs={epochs}", f"eval_every={epochs}",
                                                    *(vs_airbench.SMOKE if ctx.smoke else [])])
            last: list[MetricRow] = []
            result = vs_airbench.run_budgetnet(recipe, data, ctx.device, 0, on_epoch=last.append)
            runs.append({"design": i, "epochs": epochs, "val_acc": last[-1].val_acc,
                         "train_seconds": result["train_seconds"], "model": describe(design.model)})
        record["rows"] = rank_agreement(runs, full)


def rank_agreement(runs: list[dict], full: float) -> list[dict]:
    """Per trial length: Spearman's rank correlation of the designs' validation accuracy with the full length's."""
    done = sorted({r["design"] for r in runs if r["epochs"] == full})
    acc = {(r["design"], r["epochs"]): r["val_acc"] for r in runs}
    rows = []
    for epochs in sorted({r["epochs"] for r in runs}):
        both = [d for d in done if (d, epochs) in acc]
        row = {"epochs": epochs, "designs": len(both), "spearman": None,
               "train_seconds": sum(r["train_seconds"] for r in runs if r["epochs"] == epochs and r["design"] in both)}
        if len(both) >= 3:
            row["spearman"] = float(spearmanr([acc[d, epochs] for d in both], [acc[d, full] for d in both])[0])
        rows.append(row)
    return rows


RECIPES = ("small", "cpu")  # the recipes whose targets are set on the CPU: their accuracy here, where runs take seconds


def stage_recipes(ctx: StageContext, record: dict) -> None:
    for name in RECIPES:
        train_seeds(ctx, STAGES["recipes"], record, name)


def stage_best(ctx: StageContext, record: dict) -> None:
    train_seeds(ctx, STAGES["best"], record, "best")


def judge_best(ctx: StageContext, record: dict) -> None:
    accuracy_check(record, record["rows"], 0.935, 240)


STAGES = {s.name: s for s in [
    Stage("throughput", 110, stage_throughput, judge_throughput, columns=train_throughput.COLUMNS),
    Stage("augmix", 35, stage_augmix, judge_augmix, columns=train_throughput.COLUMNS),
    Stage("seed-steps", 15, stage_seed_steps, judge_seed_steps),
    Stage("seed-fast", 140, stage_seed_fast, judge_seed_fast, seeds=1, full_seeds=2,
          smoke=[*TINY_SEED, "epochs=1", "batch_size=64"]),
    Stage("recipes", 60, stage_recipes, seeds=2, full_seeds=4, smoke=vs_airbench.SMOKE),
    Stage("levers", 150, stage_levers, columns=LEVER_COLUMNS, seeds=4, full_seeds=4),
    Stage("airbench", 90, stage_airbench, judge_airbench, seeds=1, full_seeds=3, columns=vs_airbench.COLUMNS),
    Stage("fidelity", 120, stage_fidelity, columns=[("trial epochs", "epochs", ""), ("designs", "designs", ""),
                                                    ("Spearman vs full", "spearman", ".3f"),
                                                    ("train s (all designs)", "train_seconds", ".1f")]),
    Stage("best", 130, stage_best, judge_best, seeds=1, full_seeds=2,
          smoke=["model.channels=[8, 16, 16]", "epochs=1", "batch_size=64", "compile=false"]),
]}


ONLY_ALONE = ("levers", "fidelity", "best")  # stages that run only with --stage NAME


# ---- the job ------------------------------------------------------------------------------------------------

def _on_alarm(signum, frame) -> None:
    raise StageTimeout


def run_stages(names: list[str], ctx: StageContext, deadline: float, report: Callable[[list[dict]], None]) -> list[dict]:
    """Run the stages in order, each capped at its share of the time left before `deadline` (time.monotonic);
    `report(records)` after each stage."""
    records: list[dict] = []
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, name in enumerate(names):
        stage = STAGES[name]
        left = deadline - time.monotonic()
        cap = left * stage.planned_s / sum(STAGES[n].planned_s for n in names[i:])
        record = {"stage": name, "status": "running", "cap_s": round(cap, 1), "rows": [], "checks": [], "notes": []}
        records.append(record)
        start = time.monotonic()
        if cap < 1:
            record["status"] = "skipped: the deadline had passed"
        else:
            try:
                signal.setitimer(signal.ITIMER_REAL, cap)
                stage.run(ctx, record)
                record["status"] = "done"
            except StageTimeout:
                record["status"] = f"out of time after {cap:.0f} s (rows measured so far are kept)"
            except Exception as e:  # one broken stage must not cost the others their figures
                record["status"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            try:
                stage.judge(ctx, record)
            except Exception as e:
                record["notes"].append(f"judging the rows failed: {type(e).__name__}: {e}")
        record["seconds"] = round(time.monotonic() - start, 1)
        report(records)
    return records


def write_results(out: Path, header: dict, records: list[dict]) -> None:
    """results.json (everything) and results.md (the targets, then every stage's table) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**header, "stages": records}, indent=1, default=str))
    checks = [{"stage": r["stage"], **c} for r in records for c in r["checks"]]
    lines = [f"# gpu_check: {header['device']}", "",
             *(f"- {k}: {v}" for k, v in header.items() if k != "device"), "",
             "## Targets", "", markdown(checks) if checks else "(none measured)", ""]
    for r in records:
        lines += [f"## {r['stage']}: {r['status']} ({r['seconds']} s of a {r['cap_s']} s cap)", "",
                  *r["notes"], "", markdown(r["rows"], STAGES[r["stage"]].columns) if r["rows"] else "(no rows)", ""]
    (out / "results.md").write_text("\n".join(lines))


def rebuild_data(npz: Path, out: Path) -> Path:
    """The data set folder rebuilt from the compact JPEG copy by the tool beside it (../shared/tools/README.md)."""
    tool = npz.parent / "cifar10_from_jpeg.py"
    if not npz.is_file() or not tool.is_file():
        raise SystemExit(f"--npz {npz}: need the file and cifar10_from_jpeg.py beside it "
                         "(copy both from ../shared as ../shared/tools/README.md describes)")
    subprocess.run([sys.executable, str(tool), str(npz), str(out)], check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for results.md and results.json")
    p.add_argument("--stage", choices=list(STAGES), action="append",
                   help="run this stage alone, with its full seed count (repeat for several, in the order given)")
    p.add_argument("--seeds", type=int, help="seeds per trained recipe (default: 1 in a whole job, the full count "
                                             "with --stage)")
    p.add_argument("--deadline", type=float, default=480, help="seconds for the whole job (default: %(default)s)")
    p.add_argument("--npz", type=Path, help="rebuild the data set from this cifar10-jpeg.npz first")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA)")
    p.add_argument("--airbench94-muon", type=Path, default=vs_airbench.MUON_FILE, metavar="PATH",
                   help="airbench94_muon.py for the airbench stage (default: ../shared/ref/airbench94_muon.py; "
                        "gpu_job.sh passes .device/airbench94_muon.py)")
    p.add_argument("--pairs", type=vs_airbench.parse_pairs, metavar="AIRBENCH:RECIPE,...",
                   help="the airbench stage's pairs (default: "
                        + ",".join(map(":".join, vs_airbench.DEFAULT_PAIRS["cuda"])) + ")")
    p.add_argument("--smoke", action="store_true", help="every stage for a few steps on the CPU, random data")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu measures for real on the CPU, e.g. --stage seed-steps (about 5 minutes on 2 cores)")
    args = p.parse_args(argv)
    deadline = time.monotonic() + args.deadline
    device = torch.device("cpu" if args.smoke else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run --smoke, or --device cpu --stage NAME to measure a stage on the CPU")
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = rebuild_data(args.npz, Path(tmp)) if args.npz else args.data
        data = vs_airbench.smoke_data(512, 32) if args.smoke else load_data(DataConfig(), data_dir, device)
        names = args.stage or [name for name in STAGES if name not in ONLY_ALONE]
        configure_backend(device)  # before the first stage: the plain loop runs under the settings train() uses
        header = {"device": device_name(device) + (" (SMOKE RUN: not a measurement)" if args.smoke else ""),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                  "torch": torch.__version__, "python": platform.python_version(),
                  "data": "random images (smoke)" if args.smoke else str(data_dir or "$BUDGETNET_DATA"),
                  "deadline_s": args.deadline,
                  "backend": ("cudnn.benchmark and TF32 matmuls/convolutions in every loop: the fp32 rows are TF32"
                              if device.type == "cuda" else "CPU defaults in every loop")}
        ctx = StageContext(device, data, args.smoke, args.seeds, args.stage is not None, args.airbench94_muon,
                           args.pairs, data_dir)
        records = run_stages(names, ctx, deadline, lambda records: write_results(out, header, records))
    print((out / "results.md").read_text())
    failed = [r["stage"] for r in records if r["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
