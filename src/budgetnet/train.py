"""The training loop: data on the device, batched augmentation, metrics, checkpoints, resume, DDP."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import checkpoint
from .augment import build_augment
from .averaging import Lookahead, build_ema, check_ema, check_lookahead
from .config import Recipe, RecipeError, from_dict
from .data import Data, batch_indices, check_data_config, load_data, steps_per_epoch as epoch_steps
from .evaluate import TTA, evaluate_split
from .losses import training_loss
from .model import build_model, init_whitening
from .optim import OPTIMIZERS, build_optimizer, build_scheduler, check_schedule, decay_weights
from .rundir import RunFiles, append_jsonl, read_metrics, summarize, write_summary
from .runtime import (COMPILE_MODES, Dist, autocast, check_precision, compile_model, configure_backend,
                      init_distributed, resolve_device)
from .spec import check_budget


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


EpochCallback = Callable[[dict], None]


def check_recipe(recipe: Recipe) -> int:
    """Check everything about a recipe that can be checked before any work and return its parameter count.

    Raises one ValueError/RuntimeError subclass with a one-line message naming the key and the fix.
    """
    for key in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
        if getattr(recipe, key) < 1:
            raise RecipeError(f"{key}={getattr(recipe, key)} must be 1 or more")
    if not 0 <= recipe.label_smoothing < 1:
        raise RecipeError(f"label_smoothing={recipe.label_smoothing} must be in [0, 1)")
    if recipe.grad_clip is not None and recipe.grad_clip <= 0:
        raise RecipeError(f"grad_clip={recipe.grad_clip} must be > 0 (or null for no clipping)")
    if recipe.tta not in TTA:
        raise RecipeError(f"tta={recipe.tta!r} is unknown: use one of {', '.join(TTA)}")
    if recipe.optimizer.name not in OPTIMIZERS:
        raise RecipeError(f"optimizer.name={recipe.optimizer.name!r} is unknown: use one of {', '.join(OPTIMIZERS)}")
    check_precision(recipe.precision)
    if recipe.compile_mode not in COMPILE_MODES:
        raise RecipeError(f"compile_mode={recipe.compile_mode!r} is unknown: use one of {', '.join(COMPILE_MODES)}")
    resolve_device(recipe.device)
    check_data_config(recipe.data, recipe.model.num_classes)
    params = check_budget(recipe.model, recipe.budget)
    build_augment(recipe.augment, recipe.model.num_classes)
    check_schedule(recipe.schedule)
    check_ema(recipe.ema)
    check_lookahead(recipe.lookahead)
    return params


def train(recipe: Recipe, out_dir: str | Path, data_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True, on_epoch: EpochCallback | None = None, data: Data | None = None) -> dict:
    """Train `recipe` into run directory `out_dir` (or continue the run there) and return its summary.

    Everything that can be checked is checked before any work (`check_recipe`, then the run directory and the
    data), so a bad value leaves no run directory behind. `on_epoch(row)` sees each epoch's metrics (a search can raise to prune).
    """
    files = RunFiles(Path(out_dir))
    if resume:
        if not files.recipe.is_file():
            raise RecipeError(f"--resume {out_dir}: no recipe.yaml there, so it is not a budgetnet run directory")
        recipe = from_dict(Recipe, yaml.safe_load(files.recipe.read_text()))
    elif files.last.is_file():
        raise RecipeError(f"{out_dir} already holds a run: continue it with --resume {out_dir}, "
                          "or choose another --out")
    params = check_recipe(recipe)
    augment = build_augment(recipe.augment, recipe.model.num_classes)

    ddp = init_distributed(recipe.device)
    device = resolve_device(recipe.device, ddp.local_rank)
    configure_backend(device)
    if recipe.batch_size % ddp.world_size:
        raise RecipeError(f"batch_size={recipe.batch_size} must be divisible by the {ddp.world_size} processes")
    data = data or load_data(recipe.data, data_dir, device)
    if ddp.is_main:
        files.root.mkdir(parents=True, exist_ok=True)
        files.recipe.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))

    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model).to(device, memory_format=torch.channels_last if recipe.channels_last
                                         else torch.contiguous_format)
    if recipe.model.stem == "whiten":  # frozen filters from the patch statistics of 5,000 training images
        init_whitening(model, data.normalize(data.train[0][:5000].float() / 255))
    optimizer = build_optimizer(model, recipe.optimizer)
    n_train = len(data.train[0])
    steps_per_epoch = epoch_steps(n_train, recipe.batch_size)
    scheduler = build_scheduler(optimizer, recipe.schedule, recipe.epochs, steps_per_epoch)
    ema = build_ema(model, recipe.ema)  # evaluated and checkpointed as "model" when enabled
    lookahead = Lookahead(model, recipe.lookahead, recipe.epochs * steps_per_epoch) if recipe.lookahead.enabled else None
    eval_model = ema.module if ema is not None else model

    start_epoch, best, history = 0, -1.0, []
    if resume and files.last.is_file():
        state = checkpoint.load(files.last, device)
        checkpoint.load_weights(model, state["train_model"] if ema is not None else state["model"])
        if ema is not None:
            checkpoint.load_weights(ema.module, state["model"], "EMA checkpoint")
            ema.n_averaged.fill_(state["ema_updates"])
        if lookahead is not None:
            lookahead.load_state_dict(state["lookahead"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"], state["best"]
    if resume and ddp.is_main:  # rows written after the last checkpoint belong to lost work
        history = read_metrics(files.root)[:start_epoch]
        files.metrics.write_text("".join(json.dumps(r) + "\n" for r in history))
        print(f"resuming {files.root} after epoch {start_epoch}/{recipe.epochs}", file=sys.stderr)

    net = DistributedDataParallel(model) if ddp.world_size > 1 else model
    step_fn = compile_model(net, recipe.compile, recipe.compile_mode)
    summary = _summary(recipe, params, device, history, "finished" if start_epoch >= recipe.epochs else "running")
    if ddp.is_main and start_epoch >= recipe.epochs:
        write_summary(files, summary)
    for epoch in range(start_epoch, recipe.epochs):
        torch.manual_seed(recipe.seed * 100_003 + epoch * 1_009 + ddp.rank)  # randomness is a function of (seed, epoch, rank)
        row = _train_epoch(step_fn, model, optimizer, scheduler, ema, lookahead, augment, data, recipe, device, ddp,
                           epoch, steps_per_epoch, progress)
        if not math.isfinite(row["train_loss"]):
            summary = _summary(recipe, params, device, history, "diverged")
            if ddp.is_main:
                write_summary(files, summary)
            raise TrainingDiverged(
                f"epoch {epoch + 1}: the training loss is {row['train_loss']}; the run stopped and keeps its "
                f"last good checkpoint ({files.last}). Lower optimizer.lr or set grad_clip.")
        if lookahead is not None and epoch + 1 == recipe.epochs:
            lookahead.finish()
        if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs:
            for split in ("val", "test"):
                images = getattr(data, split)
                if images is not None:
                    loss, acc = evaluate_split(eval_model, images, data, recipe.eval_batch_size, device,
                                               recipe.precision, ddp, recipe.tta)
                    row.update({f"{split}_loss": loss, f"{split}_acc": acc})
        history.append(row)
        key = "val_acc" if data.val is not None else "test_acc"
        improved = row.get(key, -1.0) > best
        best = max(best, row.get(key, -1.0))
        if ddp.is_main:
            append_jsonl(files.metrics, row)
            state = {"model": eval_model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "best": best,
                     "recipe": recipe.to_dict(), "params": params}
            if ema is not None:
                state.update(train_model=model.state_dict(), ema_updates=int(ema.n_averaged))
            if lookahead is not None:
                state["lookahead"] = lookahead.state_dict()
            checkpoint.save(state, files.last)
            if improved:
                checkpoint.save(state, files.best)
            summary = _summary(recipe, params, device, history,
                               "finished" if epoch + 1 == recipe.epochs else "running")
            write_summary(files, summary)
            if progress:
                print(_epoch_line(row, recipe.epochs), file=sys.stderr)
        if on_epoch is not None:
            try:
                on_epoch(row)
            except BaseException:  # a search pruned the trial, or the caller gave up: say so in the summary
                if ddp.is_main and summary["status"] == "running":
                    summary = {**summary, "status": "stopped"}
                    write_summary(files, summary)
                raise
    if ddp.world_size > 1:
        dist.barrier()
    return summary


def _train_epoch(step_fn, model, optimizer, scheduler, ema, lookahead, augment, data: Data, recipe: Recipe,
                 device: torch.device, ddp: Dist, epoch: int, steps_per_epoch: int, progress: bool) -> dict:
    """One pass over the training set; metrics stay on the device until the end of the epoch."""
    model.train()
    x_all, y_all = data.train
    batches = batch_indices(len(x_all), recipe.batch_size, device,
                            generator=torch.Generator().manual_seed(recipe.seed * 7919 + epoch),
                            drop_last=len(x_all) >= recipe.batch_size, rank=ddp.rank, world_size=ddp.world_size)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch", leave=False,
               disable=not (progress and ddp.is_main), mininterval=1.0, dynamic_ncols=True)
    start = time.perf_counter()
    for i, idx in enumerate(bar):
        images, labels = augment(x_all[idx], y_all[idx])
        images = data.normalize(images).contiguous(memory_format=memory_format)
        with autocast(device, recipe.precision):
            logits = step_fn(images)
        loss = training_loss(logits, labels, augment.num_views, augment.jsd_lambda, recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        decay_weights(optimizer)
        optimizer.step()
        scheduler.step()
        step = epoch * steps_per_epoch + i + 1
        if ema is not None and step % recipe.ema.every == 0:
            ema.update_parameters(model)
        if lookahead is not None:
            lookahead.step(step)
        n = len(idx)
        hard = labels if labels.ndim == 1 else labels.argmax(1)
        loss_sum += loss.detach() * n
        correct += (logits[:n].argmax(1) == hard).sum()
        seen += n
        if bar.disable is False and (i % 20 == 19 or i + 1 == len(batches)):
            rate = seen * ddp.world_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{rate:.0f}")
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])
    if ddp.world_size > 1:
        dist.all_reduce(totals)
    seconds = time.perf_counter() - start
    loss_total, correct_total, seen_total = totals.tolist()
    return {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_total / seen_total,
            "train_acc": correct_total / seen_total, "seconds": seconds, "images_per_s": seen_total / seconds}


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"lr {row['lr']:.4g}",
             f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"]
    for split in ("val", "test"):
        if f"{split}_acc" in row:
            parts.append(f"{split} loss {row[f'{split}_loss']:.4f} acc {row[f'{split}_acc']:.4f}")
    parts.append(f"{row['seconds']:.1f}s ({row['images_per_s']:.0f} img/s)")
    return " | ".join(parts)


def _summary(recipe: Recipe, params: int, device: torch.device, history: list[dict], status: str) -> dict:
    return summarize(recipe, params, history, status, device=str(device))
