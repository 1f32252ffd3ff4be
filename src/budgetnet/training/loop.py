"""The training loop: data on the device, batched augmentation, metrics, checkpoints, resume, preemption, DDP."""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from .. import __version__
from ..config import Recipe, RecipeError, load_recipe
from ..data.augment import Augment, build_augment
from ..data.cifar import Data, batch_indices, load_data, run_steps, steps_in, steps_per_epoch as epoch_steps
from ..design.model import ResNet, init_whitening, train_whiten_bias
from ..design.spec import check_budget
from ..errors import RunFailed
from . import checkpoint
from .averaging import Lookahead, build_ema
from .interrupts import Interrupted, StopRequest, stop_on_signals
from .losses import training_loss
from .optim import ConvMuon, Schedule, build_optimizer, build_scheduler, decay_weights
from .provenance import git_commit, provenance
from ..atomic import DiskFullError
from .rundir import MetricRow, RunFiles, RunSummary, recipe_changes, summarize
from .runtime import (Dist, autocast, broadcast_buffers, compile_model, configure_backend, init_distributed,
                      resolve_device)
from .scoring import evaluate_split

# Randomness is a function of (seed, epoch, rank), so a resumed run draws what an uninterrupted one would: each
# epoch reseeds the global RNG (augmentation) and draws the batch order from its own generator. The strides are
# primes, so that neighbouring seeds and epochs never share a stream.
AUGMENT_SEED_STRIDE, AUGMENT_EPOCH_STRIDE = 100_003, 1_009  # augment seed = seed*100003 + epoch*1009 + rank
ORDER_SEED_STRIDE = 7_919                                    # batch-order seed = seed*7919 + epoch
PROGRESS_EVERY = 20  # steps between progress-bar updates, each a host synchronisation (so is each EMA update)
# what --resume --set may not change: the architecture, the data and its order, and the state a checkpoint holds
FIXED_ON_RESUME = ("model", "data", "augment", "batch_size", "seed", "ema.enabled", "lookahead.enabled")


class TrainingDiverged(RunFailed):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Interrupted):
    """Ctrl-C or SIGTERM stopped the run; the message says which checkpoint is kept and how to continue."""


EpochCallback = Callable[[MetricRow], None]


def check_recipe(recipe: Recipe) -> int:
    """Check everything about a recipe that can be checked before any work and return its parameter count:
    Recipe.validate (every key), then the device on this machine and the budgets (parameters, GFLOP per image).

    Raises a UsageError (RecipeError, SpecError, ...) with a one-line message naming the key and the fix.
    """
    recipe.validate()
    resolve_device(recipe.device)  # whether it exists is a fact of this machine, so not in Recipe.validate
    return check_budget(recipe.model, recipe.budget, recipe.max_gflops)


AUTO_CHECKPOINTS = 50  # checkpoint_every=null: at most this many checkpoints a run (every epoch up to 50 epochs)


def checkpoint_due(recipe: Recipe, epoch: int) -> bool:
    """Whether finished `epoch` writes last.pt (and best.pt when it improved): every `checkpoint_every` epochs and
    always the last (recipe.last_epoch, partial in a fractional run); 0 only the last; null (the default) every
    epoch for runs of up to 50 epochs, else every ceil(epochs / 50), so that a crash costs at most 2% of a long run
    and a 1,200-epoch run writes 50 checkpoints.
    A resume continues from the last one written and trains the epochs since again (exactly: see TrainState)."""
    every = recipe.checkpoint_every
    if every is None:
        every = math.ceil(recipe.epochs / AUTO_CHECKPOINTS)
    return epoch == recipe.last_epoch or (every > 0 and epoch % every == 0)


@dataclass
class TrainState:
    """Everything training changes: the weights, the optimizer and its schedule, the averages, and the progress."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | ConvMuon
    scheduler: Schedule
    ema: AveragedModel | None
    lookahead: Lookahead | None
    steps_per_epoch: int
    total_steps: int     # of the whole run (data.cifar.run_steps): the last epoch stops there
    epoch: int = 0       # epochs finished
    step: int = 0        # optimizer steps taken
    best: float = -1.0   # best validation (else test) accuracy of the checkpointed epochs so far (best.pt's)

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated and checkpointed as "model": the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict:
        state = {"model": self.eval_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "best": self.best}
        if self.ema is not None:
            state.update(train_model=self.model.state_dict(), ema_updates=int(self.ema.n_averaged))
        if self.lookahead is not None:
            state["lookahead"] = self.lookahead.state_dict()
        return state

    def load_state_dict(self, state: dict, new_hyperparameters: bool = False) -> None:
        """Continue from a checkpoint; with `new_hyperparameters` the optimizer keeps its moments but takes this
        recipe's settings (learning rate, weight decay, schedule) from the checkpoint's step on."""
        meta = checkpoint.CheckpointMeta.of(state)
        checkpoint.load_weights(self.model, state["train_model"] if self.ema is not None else state["model"])
        if self.ema is not None:
            checkpoint.load_weights(self.ema.module, state["model"], "EMA checkpoint")
            self.ema.n_averaged.fill_(meta.ema_updates)
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])
        settings = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        if new_hyperparameters:
            for group, own in zip(self.optimizer.param_groups, settings):
                group.update(own)
        self.scheduler.load_state_dict(state["scheduler"])  # each group's lr from its initial_lr at the saved step
        self.epoch, self.best = meta.epoch, meta.best
        self.step = self.scheduler.last_epoch  # the steps taken (a partial last epoch's included)


def build_optimization(model: nn.Module, recipe: Recipe,
                       train_images: int) -> tuple[torch.optim.Optimizer | ConvMuon, Schedule, int, int]:
    """The optimizer over `model`'s parameter groups and its schedule, as a run of `recipe` on `train_images`
    images trains them, with the steps per epoch and the run's total steps."""
    optimizer = build_optimizer(model, recipe.optimizer, recipe.batch_size)
    steps_per_epoch = epoch_steps(train_images, recipe.batch_size)
    total_steps = run_steps(recipe.epochs, steps_per_epoch)
    return (optimizer, build_scheduler(optimizer, recipe.schedule, total_steps, steps_per_epoch), steps_per_epoch,
            total_steps)


def build_state(recipe: Recipe, data: Data, device: torch.device, ddp: Dist) -> TrainState:
    """A fresh TrainState for `recipe` (seeded with recipe.seed, so every rank starts from the same weights)."""
    torch.manual_seed(recipe.seed)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model = ResNet(recipe.model).to(device, memory_format=memory_format)
    if recipe.model.stem == "whiten":  # frozen filters from the patch statistics of 5,000 training images
        init_whitening(model, data.normalize(data.train[0][:5000].float() / 255))
    if recipe.sync_bn and ddp.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer, scheduler, steps_per_epoch, total_steps = build_optimization(model, recipe, len(data.train[0]))
    lookahead = Lookahead(model, recipe.lookahead, total_steps) if recipe.lookahead.enabled else None
    return TrainState(model, optimizer, scheduler, build_ema(model, recipe.ema), lookahead, steps_per_epoch,
                      total_steps)


class RunWriter:
    """Rank 0's writes to the run directory (other ranks write nothing): recipe, overrides, checkpoints, metrics,
    summary. A checkpointed epoch's checkpoint and metric row are one unit: best.pt, then last.pt (which holds the
    row too), then the row, so that a failure before last.pt is replaced leaves the previous unit and one after it
    leaves the row for the resume to restore. The rows after the last checkpoint are dropped on resume, which trains
    those epochs again. With `is_main` false (other ranks, or no run directory) it writes nothing. `views` is the
    images the network sees per training image (the augmentation's)."""

    def __init__(self, files: RunFiles | None, recipe: Recipe, params: int, device: torch.device, classes: list[str],
                 is_main: bool, views: int = 1):
        self.files, self.recipe, self.params, self.classes, self.views = files, recipe, params, classes, views
        self.is_main = is_main and files is not None
        self.provenance = provenance(device, commit=files is not None)
        self.history: list[MetricRow] = []
        self.saved_epoch = 0  # the epoch of the last checkpoint written (or resumed from)

    def start(self, resume: bool = False) -> None:
        """Create the run directory (or clean a killed writer's partial files) and, for a new run, record the
        recipe (a resumed run records it in `resume`, once its checkpoint is loaded and the run continues)."""
        if self.is_main:
            self.files.checkpoints.mkdir(parents=True, exist_ok=True)
            self.files.remove_partial_writes()
            if not resume:
                self.files.write_recipe(self.recipe)

    def resume(self, epoch: int, changes: dict[str, tuple], row: MetricRow | None = None) -> None:
        """Keep the metric rows up to the checkpoint's `epoch` (later rows belong to lost work), with the
        checkpoint's own `row` when the disk filled before it was appended, and record the recipe changes that
        take effect from the next epoch."""
        self.history = self.files.read_metrics()[:epoch]
        restored = row is not None and len(self.history) < epoch
        if restored:
            self.history.append(row)
        self.saved_epoch = epoch
        if not self.is_main:
            return
        self.files.write_recipe(self.recipe)
        self.files.write_metrics(self.history)
        if changes:
            self.files.append_override(epoch + 1, changes)
        print(f"resuming {self.files.root} after epoch {epoch}/{self.recipe.epochs}"
              + (f" (its metrics row restored from {self.files.last})" if restored else "")
              + "".join(f"; {k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changes.items())), file=sys.stderr)

    def epoch_done(self, row: MetricRow, state: TrainState, improved: bool, save: bool = True) -> None:
        """Checkpoint when `save` (best when `improved`, then last, each holding the row), then the metric row,
        then the summary."""
        if self.is_main and save:
            ckpt = {**state.state_dict(), "recipe": self.recipe.to_dict(), "params": self.params,
                    "classes": self.classes, "budgetnet_version": __version__, "budgetnet_commit": git_commit(),
                    "metrics": row.to_dict()}
            if improved:
                checkpoint.save(ckpt, self.files.best)
            checkpoint.save(ckpt, self.files.last)
        if save:
            self.saved_epoch = row.epoch
        if self.is_main:
            self.files.append_metrics(row)
        self.history.append(row)
        self.write_summary("finished" if row.epoch == self.recipe.last_epoch else "running")

    def summary(self, status: str, error: str | None = None) -> RunSummary:
        """The summary of the epochs so far with `status`, this process's provenance and `error` (why it stopped)."""
        return summarize(self.recipe, self.params, self.history, status, self.views, **self.provenance, error=error)

    def write_summary(self, status: str, error: str | None = None) -> RunSummary:
        """Write (on rank 0) and return the summary with `status` and `error`."""
        summary = self.summary(status, error)
        if self.is_main:
            self.files.write_summary(summary)
        return summary

    def kept(self) -> str:
        """Which checkpoint a stopped run keeps, in words."""
        done = self.saved_epoch
        if self.files is None:
            return "nothing (it trained without a run directory)"
        return (f"its last good checkpoint, after epoch {done} ({self.files.last})" if done
                else "no checkpoint (none written yet)")

    def unkept(self, epoch: int) -> str:
        """What becomes of the epochs up to `epoch` that a stopped run trained, in words ('' when all are kept)."""
        done = self.saved_epoch
        if done < epoch:
            return f"; epoch {done + 1} is trained again on --resume" if done + 1 == epoch else \
                f"; epochs {done + 1}-{epoch} are trained again on --resume"
        if len(self.history) < done:
            return f"; epoch {done}'s metrics row, not written, is restored from that checkpoint on --resume"
        return ""


def train(recipe: Recipe | None, out_dir: str | Path | None, data_dir: str | Path | None = None, *,
          resume: bool = False, progress: bool = True, on_epoch: EpochCallback | None = None, data: Data | None = None,
          overrides: list[str] | tuple[str, ...] = ()) -> RunSummary:
    """Train `recipe` into run directory `out_dir`, or continue the run there (`resume`, with `overrides`:
    key=value changes such as optimizer.lr=0.01, recorded in overrides.jsonl), and return its summary.

    Everything that can be checked is checked before any work (`check_recipe`, then the run directory and the
    data), so a bad value leaves no run directory behind. `on_epoch(row)` sees each epoch's metrics (a search can
    raise to prune). Ctrl-C and SIGTERM stop with TrainingInterrupted, a full disk with atomic.DiskFullError, a
    NaN or infinite loss or accuracy (training or evaluation) with TrainingDiverged; each keeps the last
    checkpoint written and says so in summary.json. Rank 0 holds the run directory's lock (`RunFiles.locked`) for
    the whole run: a second writer gets rundir.RunBusyError. With `out_dir` None it trains with no run directory
    at all (see `train_without_rundir`).
    """
    with stop_on_signals() as stop:  # Ctrl-C and SIGTERM stop the run at the next safe point
        return _train(stop, recipe, out_dir, data_dir, resume, progress, on_epoch, data, overrides)


def _train(stop: StopRequest, recipe: Recipe | None, out_dir: str | Path | None, data_dir: str | Path | None,
           resume: bool, progress: bool, on_epoch: EpochCallback | None, data: Data | None,
           overrides: list[str] | tuple[str, ...]) -> RunSummary:
    files = RunFiles(Path(out_dir)) if out_dir is not None else None
    # every rank reads the run's recipe before the process group forms, so before rank 0 can rewrite it
    recipe, changes = _run_recipe(files, recipe, resume, overrides)
    params = check_recipe(recipe)
    augment = build_augment(recipe.augment, recipe.model.num_classes)
    ddp = init_distributed(recipe.device)
    device = resolve_device(recipe.device, ddp.local_rank)
    configure_backend(device)
    _check_world(recipe, ddp, device)
    data = data or load_data(recipe.data, data_dir, device, note=ddp.is_main)
    if stop.requested:
        raise TrainingInterrupted("interrupted before training started: nothing was written; rerun the same "
                                  "command", stop.signum)

    writer = RunWriter(files, recipe, params, device, data.classes, ddp.is_main, augment.num_views)
    # one writer per run directory: rank 0 holds its lock for the whole run (other ranks write nothing)
    with files.locked() if ddp.is_main and files is not None else contextlib.nullcontext():
        if files is not None:
            _check_run_dir(files, resume, recipe)  # again under the lock: another process may have started a run
        state = build_state(recipe, data, device, ddp)
        saved = checkpoint.load(files.last, device) if resume and files.last.is_file() else {}
        if saved:
            state.load_state_dict(saved, new_hyperparameters=bool(changes))
        writer.start(resume)
        if resume:
            writer.resume(state.epoch, changes, checkpoint.CheckpointMeta.of(saved).metrics)
        net = DistributedDataParallel(state.model) if ddp.world_size > 1 else state.model
        step_fn = compile_model(net, recipe.compile, recipe.compile_mode)
        writer.write_summary("finished" if state.epoch >= recipe.last_epoch else "running")
        try:
            while state.epoch < recipe.last_epoch:
                _check_stop(stop, ddp, device)
                row = _train_epoch(state, step_fn, augment, data, recipe, device, ddp, progress, stop)
                _check_finite(row, writer, recipe)
                row = _evaluate(row, state, data, recipe, device, ddp)
                _check_finite(row, writer, recipe)  # a NaN evaluation is a divergence too, never a result
                score = row.val_acc if data.val is not None else row.test_acc
                score = -1.0 if score is None else score
                save = checkpoint_due(recipe, state.epoch)
                improved = save and score > state.best
                state.best = max(state.best, score) if save else state.best
                writer.epoch_done(row, state, improved, save)
                if progress and ddp.is_main:
                    print(_epoch_line(row, recipe.epochs), file=sys.stderr)
                if on_epoch is not None:
                    on_epoch(row)
        except KeyboardInterrupt as e:  # Interrupted at a safe point, or a plain Ctrl-C outside the main thread
            if files is None:
                raise
            writer.write_summary("interrupted")
            raise TrainingInterrupted(f"interrupted: the run keeps {writer.kept()}; continue with --resume "
                                      f"{files.root}", getattr(e, "signum", signal.SIGINT)) from None
        except DiskFullError as e:
            with contextlib.suppress(DiskFullError):
                writer.write_summary("disk_full", error=str(e))
            raise DiskFullError(f"{e}; the partial file was removed and the run keeps {writer.kept()}"
                                f"{writer.unkept(state.epoch)}: free space, then continue with --resume "
                                f"{files.root}") from None
        except TrainingDiverged:
            raise
        except BaseException:  # a search pruned the trial, the caller gave up, or an error: say so in the summary
            if state.epoch < recipe.last_epoch:
                writer.write_summary("stopped")
            raise
    if ddp.world_size > 1:
        torch.distributed.barrier()
    return writer.summary("finished")


def train_without_rundir(recipe: Recipe, data: Data | None = None, data_dir: str | Path | None = None,
                         progress: bool = False, on_epoch: EpochCallback | None = None) -> RunSummary:
    """Train `recipe` and return its summary (final_test_acc, train_seconds, epochs_done, params, device_name...)
    with no run directory at all: no recipe, metrics, summary or checkpoint is written and no git commit is looked
    up (budgetnet_commit is None), so that a benchmark's clock times training and evaluation alone."""
    return train(recipe, None, data_dir, progress=progress, on_epoch=on_epoch, data=data)


FINITE = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")  # a NaN in one is a divergence


def _check_finite(row: MetricRow, writer: RunWriter, recipe: Recipe) -> None:
    """Stop with TrainingDiverged (recorded in summary.json, with why) when one of the epoch's losses or
    accuracies is NaN or infinite; the epoch's checkpoint and metric row are not written."""
    bad = next((k for k in FINITE if getattr(row, k) is not None and not math.isfinite(getattr(row, k))), None)
    if bad is None:
        return
    fix = "Lower the learning rate or set grad_clip"
    message = f"epoch {row.epoch}: the {bad.replace('_', ' ')} is {getattr(row, bad)}; "
    message += (f"{fix}." if writer.files is None else
                f"the run stopped with {writer.kept()}. {fix} and continue: budgetnet train --resume "
                f"{writer.files.root} --set optimizer.lr={recipe.optimizer.lr / 2:g}")
    writer.write_summary("diverged", error=message)
    raise TrainingDiverged(message)


def _check_world(recipe: Recipe, ddp: Dist, device: torch.device) -> None:
    """Refuse what this many processes on this device cannot run, before any work."""
    if recipe.batch_size % ddp.world_size:
        raise RecipeError(f"batch_size={recipe.batch_size} must be divisible by the {ddp.world_size} processes")
    if recipe.model.whiten_bias_epochs and ddp.world_size > 1:
        raise RecipeError("model.whiten_bias_epochs freezes a parameter part-way, which DDP's gradient reducer does "
                          "not allow: train on one process or set model.whiten_bias_epochs=0")
    if recipe.sync_bn and ddp.world_size > 1 and device.type != "cuda":
        raise RecipeError("sync_bn=true needs CUDA devices (torch's SyncBatchNorm); on the CPU use sync_bn=false")


def _run_recipe(files: RunFiles | None, recipe: Recipe | None, resume: bool,
                overrides: list[str] | tuple[str, ...]) -> tuple[Recipe, dict[str, tuple]]:
    """The recipe to train and, on resume, its changes {key: (old, new)} from the run's recorded recipe."""
    if files is None:  # train_without_rundir
        if resume:
            raise RecipeError("resume needs a run directory: pass the run's out_dir")
        return recipe, {}
    _check_run_dir(files, resume)
    if not resume:
        return recipe, {}
    recorded = files.read_recipe()
    recipe = load_recipe(recorded.to_dict(), overrides)
    changes = recipe_changes(recorded, recipe)
    fixed = [k for k in sorted(changes) if any(k == f or k.startswith(f + ".") for f in FIXED_ON_RESUME)]
    if fixed:
        raise RecipeError(f"--resume --set {fixed[0]}: a run in progress cannot change its architecture, data or "
                          f"checkpointed state ({', '.join(FIXED_ON_RESUME)}); start a new run with --out instead")
    return recipe, changes


def _check_run_dir(files: RunFiles, resume: bool, recipe: Recipe | None = None) -> None:
    """Refuse a run directory that a new run would mix into (`resume` false) or that cannot be continued where
    it stopped (`resume`, once the run's `recipe` is known): metric rows of an epoch that wrote a checkpoint
    (`checkpoint_due`) while last.pt is gone. Rows of a run stopped before its first checkpoint was due are
    lost work, which a resume trains again."""
    history = files.read_metrics()
    rows = len(history)
    if not resume:
        if files.last.is_file():
            raise RecipeError(f"{files.root} already holds a run: continue it with --resume {files.root}, "
                              "or choose another --out")
        if rows:
            raise RecipeError(f"{files.root} holds metrics.jsonl ({rows} epoch rows) but no checkpoint: a new run "
                              "there would mix its rows with those; choose another --out, or delete that folder")
        return
    if not files.recipe.is_file():
        raise RecipeError(f"--resume {files.root}: no recipe.yaml there, so it is not a budgetnet run directory")
    due = recipe is not None and any(checkpoint_due(recipe, r.epoch) for r in history)
    if due and not files.last.is_file():
        raise RecipeError(f"--resume {files.root}: metrics.jsonl holds {rows} epoch rows but {files.last} is gone, "
                          "so the run cannot continue where it stopped; restore the checkpoint, or start a new run "
                          "with another --out")


def _train_epoch(state: TrainState, step_fn: Callable, augment: Augment, data: Data, recipe: Recipe,
                 device: torch.device, ddp: Dist, progress: bool, stop: StopRequest) -> MetricRow:
    """One pass over the training set, or the first batches of its order up to the run's last step (a fractional
    run's last epoch), stopped after any step by a Ctrl-C or SIGTERM (`stop`). The step never waits for the
    device: metrics stay there until the end of the epoch, and the progress bar reads them every PROGRESS_EVERY
    steps."""
    epoch = state.epoch
    torch.manual_seed(recipe.seed * AUGMENT_SEED_STRIDE + epoch * AUGMENT_EPOCH_STRIDE + ddp.rank)
    state.model.train()
    augment.set_epoch(epoch)
    x_all, y_all = data.train
    batches = batch_indices(len(x_all), recipe.batch_size, device,
                            generator=torch.Generator().manual_seed(recipe.seed * ORDER_SEED_STRIDE + epoch),
                            drop_last=len(x_all) >= recipe.batch_size, rank=ddp.rank, world_size=ddp.world_size)
    batches = batches[:state.total_steps - state.step]
    bias_steps = steps_in(recipe.model.whiten_bias_epochs, state.steps_per_epoch)  # the whitening bias's steps
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch", leave=False,
               disable=not (progress and ddp.is_main), mininterval=1.0, dynamic_ncols=True)
    start = time.perf_counter()
    for i, idx in enumerate(bar):
        train_whiten_bias(state.model, state.step < bias_steps)
        images, labels = augment(x_all[idx], y_all[idx])
        images = data.normalize(images).contiguous(memory_format=memory_format)
        with autocast(device, recipe.precision):
            logits = step_fn(images)
        loss = training_loss(logits, labels, augment.num_views, augment.jsd_lambda, recipe.label_smoothing)
        _optimizer_step(state, loss, recipe)
        _check_stop(stop, ddp, device, i)
        n = len(idx)
        hard = labels if labels.ndim == 1 else labels.argmax(1)
        loss_sum += loss.detach() * n
        correct += (logits[:n].argmax(1) == hard).sum()
        seen += n
        if not bar.disable and ((i + 1) % PROGRESS_EVERY == 0 or i + 1 == len(batches)):
            rate = seen * ddp.world_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{rate:.0f}")
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])
    if ddp.world_size > 1:
        torch.distributed.all_reduce(totals)
    seconds = time.perf_counter() - start
    loss_total, correct_total, seen_total = totals.tolist()
    state.epoch += 1
    if state.lookahead is not None and state.epoch == recipe.last_epoch:
        state.lookahead.finish()
    return MetricRow(epoch=state.epoch, lr=state.optimizer.param_groups[0]["lr"], train_loss=loss_total / seen_total,
                     train_acc=correct_total / seen_total, seconds=seconds, images_per_s=seen_total / seconds)


def _check_stop(stop: StopRequest, ddp: Dist, device: torch.device, step: int | None = None) -> None:
    """Raise Interrupted if a stop was requested, between epochs or after the epoch's `step`: on one process at
    once (a flag read, no device synchronisation); with DDP once any rank received the signal, between epochs and
    every PROGRESS_EVERY steps, so that all ranks stop at the same point and none waits in a collective for one
    that left."""
    if ddp.world_size == 1:
        stop.check()
    elif step is None or (step + 1) % PROGRESS_EVERY == 0:
        signum = torch.tensor(stop.signum or 0, device=device)
        torch.distributed.all_reduce(signum, torch.distributed.ReduceOp.MAX)
        if signum.item():
            raise Interrupted(signal.Signals(int(signum)).name, int(signum))


def _optimizer_step(state: TrainState, loss: torch.Tensor, recipe: Recipe) -> None:
    """Backward, clip, decay, step, schedule, and the averages (EMA every ema.every steps, lookahead every k)."""
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.grad_clip:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), recipe.grad_clip)
    decay_weights(state.optimizer)
    state.optimizer.step()
    state.scheduler.step()
    state.step += 1
    if state.ema is not None and state.step % recipe.ema.every == 0:
        state.ema.update_parameters(state.model)
    if state.lookahead is not None:
        state.lookahead.step(state.step)


def _evaluate(row: MetricRow, state: TrainState, data: Data, recipe: Recipe, device: torch.device,
              ddp: Dist) -> MetricRow:
    """The epoch's `row` with the loss and accuracy on the val and test splits when this epoch is evaluated
    (every eval_every epochs), and plain_test_acc, the test accuracy without TTA, every test_every epochs (the
    epoch's test_acc when that is already without TTA); both after the last epoch, neither on other epochs. Every
    rank first takes rank 0's BatchNorm statistics, so the figures are those of the checkpoint rank 0 writes."""
    last = state.epoch == recipe.last_epoch
    evaluated = last or state.epoch % recipe.eval_every == 0
    plain = recipe.test_every > 0 and (last or state.epoch % recipe.test_every == 0)
    if not (evaluated or plain):
        return row
    broadcast_buffers(state.model, ddp)
    broadcast_buffers(state.eval_model, ddp)
    for split in ("val", "test") if evaluated else ():
        images = getattr(data, split)
        if images is not None:
            loss, acc = evaluate_split(state.eval_model, images, data, recipe.eval_batch_size, device,
                                       precision=recipe.precision, ddp=ddp, tta=recipe.tta,
                                       tta_fraction=recipe.tta_fraction)
            row = replace(row, **{f"{split}_loss": loss, f"{split}_acc": acc})
    if plain:
        row = replace(row, plain_test_acc=row.test_acc if evaluated and recipe.tta == "none" else evaluate_split(
            state.eval_model, data.test, data, recipe.eval_batch_size, device, precision=recipe.precision, ddp=ddp)[1])
    return row


def _epoch_line(row: MetricRow, epochs: int | float) -> str:
    parts = [f"epoch {row.epoch}/{epochs}", f"lr {row.lr:.4g}",
             f"train loss {row.train_loss:.4f} acc {row.train_acc:.4f}"]
    for split in ("val", "test"):
        if getattr(row, f"{split}_acc") is not None:
            parts.append(f"{split} loss {getattr(row, f'{split}_loss'):.4f} acc {getattr(row, f'{split}_acc'):.4f}")
    parts.append(f"{row.seconds:.1f}s ({row.images_per_s:.0f} img/s)")
    return " | ".join(parts)
