"""Optimizer and learning-rate schedule factories, selected by name (timm style)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .config import OptimizerConfig, ScheduleConfig
from .model import WhiteningStem

OPTIMIZERS = ("sgd", "adam", "adamw", "radam")
SCHEDULES = ("cosine", "warm_restarts", "step", "triangle", "constant")
SCHEDULE_ALIASES = {"onecycle": "triangle"}  # the triangle's former name (it is not torch's OneCycleLR), still read


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """The trainable parameters in two groups: weights of convs and linears, then BatchNorm parameters and
    biases (1-D tensors), which get `norm_lr_scale` times the learning rate and `norm_weight_decay`. The whitening
    stem's bias is in the first group, as in airbench94 (its bias_scaler is for BatchNorm biases only).

    With decoupled weight decay the groups carry it as `decoupled_wd`, for `decay_weights`, and give the
    optimizer none.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = {id(p) for p in trainable if p.ndim > 1}
    weights |= {id(m.bias) for m in model.modules() if isinstance(m, WhiteningStem) and m.bias is not None}
    groups = [{"params": [p for p in trainable if id(p) in weights], "lr": cfg.lr, "weight_decay": cfg.weight_decay},
              {"params": [p for p in trainable if id(p) not in weights], "lr": cfg.lr * cfg.norm_lr_scale,
               "weight_decay": cfg.weight_decay if cfg.norm_weight_decay is None else cfg.norm_weight_decay}]
    if cfg.decoupled_weight_decay:
        if cfg.name != "sgd":
            raise ValueError("optimizer.decoupled_weight_decay is for sgd; adamw decouples weight decay already")
        for g in groups:
            g["decoupled_wd"], g["weight_decay"] = g["weight_decay"], 0.0
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """One of torch's optimizers over the model's trainable parameters (groups from `param_groups`); the fused
    CUDA implementation when the parameters are on CUDA (sgd, adam, adamw).

    torch.optim.Muon is not offered: it takes 2-D weights only, and this design space is convolutions (4-D)."""
    groups = param_groups(model, cfg)
    fused = all(p.is_cuda for g in groups for p in g["params"])  # one kernel per step on CUDA; foreach elsewhere
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused or None)
    betas = tuple(cfg.betas)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, fused=fused or None)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=fused or None)
    if cfg.name == "radam":
        return torch.optim.RAdam(groups, lr=cfg.lr, betas=betas)  # no fused kernel: foreach on CUDA
    raise ValueError(f"optimizer.name={cfg.name!r} is unknown: use one of {', '.join(OPTIMIZERS)}")


@torch.no_grad()
def decay_weights(optimizer: torch.optim.Optimizer) -> None:
    """Decoupled weight decay, before `optimizer.step()`: p <- (1 - lr * wd) p for groups that carry it (the
    parameters that train now: a frozen whitening bias keeps its value, as the optimizer step leaves it)."""
    for group in optimizer.param_groups:
        wd = group.get("decoupled_wd", 0.0)
        params = [p for p in group["params"] if p.requires_grad]  # not those frozen for now
        if wd and params:
            torch._foreach_mul_(params, 1.0 - group["lr"] * wd)


def lr_at(cfg: ScheduleConfig, base_lr: float, t: float, epochs: float) -> float:
    """Learning rate after `t` epochs (fractional) of an `epochs`-long run.

    cosine and warm_restarts follow the study's equation
        eta_t = eta_min + 1/2 (eta_max - eta_min) (1 + cos(pi T_cur / T_i)),
    with T_i the run (cosine) or the current cycle, T_0 epochs long and T_mult times longer after each restart.
    step multiplies by gamma at each milestone (fractions of the run); triangle (formerly onecycle, a name still
    accepted) rises linearly from start_factor * lr (1/25) to lr over pct_start of the run, then falls linearly
    to end_factor * lr (0) at its end (airbench94: 0.2, 0.23, 0.07). With warmup_epochs the schedule keeps running
    and its learning rate is multiplied by t / warmup_epochs until then (a linear ramp from 0 into it).
    """
    eta_max, eta_min = base_lr, cfg.eta_min
    name = SCHEDULE_ALIASES.get(cfg.name, cfg.name)
    if name == "cosine":
        lr = eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * min(t / epochs, 1.0)))
    elif name == "warm_restarts":
        t_cur, t_i = t, cfg.T_0
        while t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * cfg.T_mult
        lr = eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * t_cur / t_i))
    elif name == "step":
        lr = base_lr * cfg.gamma ** sum(t >= m * epochs for m in cfg.milestones)
    elif name == "triangle":
        peak, start, end = cfg.pct_start * epochs, cfg.start_factor, cfg.end_factor
        lr = (base_lr * (start + (1 - start) * t / peak) if t < peak
              else base_lr * (end + (1 - end) * max(0.0, (epochs - t) / (epochs - peak))))
    elif name == "constant":
        lr = base_lr
    else:
        raise ValueError(f"schedule.name={cfg.name!r} is unknown: use one of {', '.join(SCHEDULES)}")
    if cfg.warmup_epochs > 0 and t < cfg.warmup_epochs:
        lr *= t / cfg.warmup_epochs
    return lr


def check_schedule(cfg: ScheduleConfig) -> None:
    """Raise ValueError for a schedule that cannot run, before any training."""
    name = SCHEDULE_ALIASES.get(cfg.name, cfg.name)
    if name not in SCHEDULES:
        raise ValueError(f"schedule.name={cfg.name!r} is unknown: use one of {', '.join(SCHEDULES)}")
    if name == "warm_restarts" and (cfg.T_0 <= 0 or cfg.T_mult < 1):
        raise ValueError("schedule.T_0 must be > 0 and schedule.T_mult >= 1")
    if name == "triangle" and not 0 < cfg.pct_start < 1:
        raise ValueError("schedule.pct_start must be between 0 and 1")
    if name == "triangle" and not (0 <= cfg.start_factor <= 1 and 0 <= cfg.end_factor <= 1):
        raise ValueError(f"schedule.start_factor={cfg.start_factor} and schedule.end_factor={cfg.end_factor} are "
                         "fractions of the peak learning rate: each must be in [0, 1]")
    if name == "step" and not all(0 < m < 1 for m in cfg.milestones):
        raise ValueError(f"schedule.milestones={cfg.milestones} are fractions of the run, each between 0 and 1 "
                         "(a milestone >= 1 is never reached): for epoch 60 of 200 write 0.3")
    if cfg.warmup_epochs < 0:
        raise ValueError(f"schedule.warmup_epochs={cfg.warmup_epochs} must be >= 0")


class Schedule:
    """Sets every group's learning rate to its `initial_lr` times one function of the step count, and holds nothing
    else (as nanoGPT sets each group's lr from one schedule function). Its state is the step count, so resuming,
    with this recipe's learning rates or new ones, is `load_state_dict`: the rates follow from the groups' own
    `initial_lr` at the checkpoint's step. State dicts carry `last_epoch` (the steps taken), as torch's schedulers do.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[[int], float]):
        self.optimizer, self.factor, self.last_epoch = optimizer, factor, 0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.factor(self.last_epoch)

    def step(self) -> None:
        """After each optimizer step."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Continue at the saved step, from the optimizer's current `initial_lr` values (load the optimizer's
        state, and any new settings, first)."""
        self.last_epoch = state["last_epoch"]
        self._apply()


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int,
                    steps_per_epoch: int) -> Schedule:
    """A schedule stepped once per optimizer step."""
    check_schedule(cfg)
    base_lr = optimizer.param_groups[0]["lr"]  # every group follows the schedule scaled by its own base lr
    return Schedule(optimizer, lambda step: lr_at_step(cfg, base_lr, step, epochs, steps_per_epoch) / base_lr)


def lr_at_step(cfg: ScheduleConfig, base_lr: float, step: int, epochs: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step `step`; with per_step false it changes only at epoch ends."""
    t = step / steps_per_epoch if cfg.per_step else float(step // steps_per_epoch)
    return lr_at(cfg, base_lr, t, epochs)

