"""Optimizer and learning-rate schedule factories, selected by name (timm style)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..config import SCHEDULE_ALIASES, OptimizerConfig, ScheduleConfig
from ..data.cifar import steps_in
from ..design.model import ResNet, WhiteningStem
from ..errors import UsageError

# The factories trust a validated section (OptimizerConfig.validate and ScheduleConfig.validate, which
# Recipe.validate runs); they check only what needs the model.


def param_groups(model: nn.Module, cfg: OptimizerConfig, batch_size: int | None = None,
                 exclude: tuple[nn.Parameter, ...] = ()) -> list[dict]:
    """The trainable parameters (less `exclude`) in two groups: weights of convs and linears, then BatchNorm
    parameters and biases (1-D tensors), which get `norm_lr_scale` times the learning rate and `norm_weight_decay`.
    The whitening stem's bias is in the first group, as in airbench94 (its bias_scaler is for BatchNorm biases only);
    with whiten_bias_as_norm (airbench94_muon) it is a third group with the second's settings and `zero_at_epoch`,
    the epoch at which `build_scheduler` has brought its learning rate linearly to 0 (model.whiten_bias_epochs).

    With decoupled weight decay the groups carry it as `decoupled_wd`, for `decay_weights`, and give the
    optimizer none. With units per_1024 (airbench's) `lr` and the weight decays are per 1,024 examples of a summed
    loss: torch's lr is lr * batch_size / (1024 (1 + 1 / (1 - momentum))) and each group's weight decay is its
    value / (lr * the group's lr scale), so that the decay per step does not move with the learning rate.
    """
    skip = {id(p) for p in exclude}
    trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in skip]
    stems = [m for m in model.modules() if isinstance(m, WhiteningStem) and m.bias is not None]
    whiten_biases = {id(m.bias) for m in stems} - skip
    weights = {id(p) for p in trainable if p.ndim > 1} | (set() if cfg.whiten_bias_as_norm else whiten_biases)
    own = whiten_biases if cfg.whiten_bias_as_norm else set()
    norm_wd = cfg.weight_decay if cfg.norm_weight_decay is None else cfg.norm_weight_decay
    lr = cfg.lr
    if cfg.units == "per_1024":
        if batch_size is None:
            raise ValueError("optimizer.units=per_1024 needs the batch size: build_optimizer(..., batch_size=)")
        lr = cfg.lr * batch_size / (1024 * (1 + 1 / (1 - cfg.momentum)))
    norm = {"lr": lr * cfg.norm_lr_scale, "weight_decay": norm_wd}
    groups = [{"params": [p for p in trainable if id(p) in weights], "lr": lr, "weight_decay": cfg.weight_decay},
              {"params": [p for p in trainable if id(p) not in weights | own], **norm}]
    scales = [1.0, cfg.norm_lr_scale]
    if own:
        epochs = max(m.spec.whiten_bias_epochs for m in model.modules() if isinstance(m, ResNet))
        groups.append({"params": [p for p in trainable if id(p) in own], **norm, "zero_at_epoch": epochs})
        scales.append(cfg.norm_lr_scale)
    if cfg.units == "per_1024":
        for g, scale in zip(groups, scales):
            g["weight_decay"] = g["weight_decay"] / (cfg.lr * scale)
    if cfg.decoupled_weight_decay:
        for g in groups:
            g["decoupled_wd"], g["weight_decay"] = g["weight_decay"], 0.0
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimizerConfig,
                    batch_size: int | None = None) -> torch.optim.Optimizer | ConvMuon:
    """One of torch's optimizers over the model's trainable parameters (groups from `param_groups`); the fused
    CUDA implementation when the parameters are on CUDA (sgd, adam, adamw). `muon`: `ConvMuon`, airbench94_muon's
    Muon on the conv filters and SGD on the rest."""
    if cfg.name == "muon":
        return ConvMuon(model, cfg, batch_size)
    groups = param_groups(model, cfg, batch_size)
    fused = all(p.is_cuda for g in groups for p in g["params"])  # one kernel per step on CUDA; foreach elsewhere
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused or None)
    betas = tuple(cfg.betas)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, fused=fused or None)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=fused or None)
    return torch.optim.RAdam(groups, lr=cfg.lr, betas=betas)  # no fused kernel: foreach on CUDA


def newton_schulz(g: Tensor, steps: int, eps: float = 1e-7) -> Tensor:
    """airbench94_muon's quintic Newton-Schulz orthogonalisation in bfloat16: about U S' V^T for g = U S V^T, with
    S' near 1. `g` is one matrix [m, n] (airbench's operations exactly) or a stack [B, m, n] of matrices of one
    shape, each orthogonalised on its own by one batched matmul per product."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = g.bfloat16()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # every singular value <= 1
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


class FilterMuon(torch.optim.Optimizer):
    """airbench94_muon's Muon on 4-D conv filter banks: a summed momentum buffer (nesterov or not), each bank
    first rescaled to Frobenius norm sqrt(C_out) (`normalize`), then stepped by lr times the Newton-Schulz
    orthogonalisation of its update flattened to (C_out, C_in*k*k); decoupled weight decay before the step.

    Two options make it cheaper, both off by default (then a step is airbench's `Muon.step`): `normalize_every`
    k > 1 rescales the banks only every k-th step (hiverge/cifar10-speedrun), and `batched` orthogonalises the
    banks of one shape together, one batched matmul per product instead of one per bank.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False, ns_steps: int = 3,
                 weight_decay: float = 0.0, normalize: bool = True, normalize_every: int = 1,
                 batched: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      weight_decay=weight_decay, normalize=normalize,
                                      normalize_every=normalize_every, batched=batched))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            updates = []
            for p in params:
                state = self.state[p]
                if not state:
                    state["momentum_buffer"], state["step"] = torch.zeros_like(p.grad), 0
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(p.grad)
                updates.append(p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf)
                if group["normalize"] and state["step"] % group["normalize_every"] == 0:
                    p.mul_(len(p) ** 0.5 / p.norm())
                state["step"] += 1
            shapes: dict[torch.Size, list[int]] = {}
            for i, p in enumerate(params):
                shapes.setdefault(p.shape if group["batched"] else i, []).append(i)
            for members in shapes.values():
                matrices = [updates[i].reshape(len(updates[i]), -1) for i in members]
                ortho = (newton_schulz(matrices[0], group["ns_steps"]) if len(members) == 1 else
                         newton_schulz(torch.stack(matrices), group["ns_steps"]))
                for i, update in zip(members, ortho.view(len(members), *matrices[0].shape)):
                    p = params[i]
                    if group["weight_decay"]:
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(update.view(p.shape), alpha=-group["lr"])


class ConvMuon:
    """airbench94_muon's optimizer: `FilterMuon` on every 4-D conv filter bank, SGD (param_groups' groups, with
    momentum, nesterov and weight decay as configured) on everything else.

    It has what training uses of an optimizer: param_groups (SGD's, then Muon's, each with its own initial_lr for
    the schedule), zero_grad, step, state_dict and load_state_dict.
    """

    def __init__(self, model: nn.Module, cfg: OptimizerConfig, batch_size: int | None = None):
        filters = [p for p in model.parameters() if p.requires_grad and p.ndim == 4]
        if not filters:
            raise UsageError("optimizer.name=muon orthogonalises conv filters, and this model trains none: use sgd")
        groups = param_groups(model, cfg, batch_size, exclude=tuple(filters))
        fused = all(p.is_cuda for g in groups for p in g["params"])
        self.sgd = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                   fused=fused or None)
        self.muon = FilterMuon(filters, lr=cfg.muon_lr, momentum=cfg.muon_momentum, nesterov=cfg.muon_nesterov,
                               ns_steps=cfg.muon_ns_steps, weight_decay=cfg.muon_weight_decay,
                               normalize=cfg.muon_normalize, normalize_every=cfg.muon_normalize_every,
                               batched=cfg.muon_batched)

    @property
    def param_groups(self) -> list[dict]:
        return self.sgd.param_groups + self.muon.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none)
        self.muon.zero_grad(set_to_none)

    def step(self) -> None:
        self.sgd.step()
        self.muon.step()

    def state_dict(self) -> dict:
        return {"sgd": self.sgd.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sgd.load_state_dict(state["sgd"])
        self.muon.load_state_dict(state["muon"])


@torch.no_grad()
def decay_weights(optimizer: torch.optim.Optimizer) -> None:
    """Decoupled weight decay, before `optimizer.step()`: p <- (1 - lr * wd) p for groups that carry it (the
    parameters that train now: a frozen whitening bias keeps its value, as the optimizer step leaves it)."""
    for group in optimizer.param_groups:
        wd = group.get("decoupled_wd", 0.0)
        if not wd:
            continue
        for p in group["params"]:
            if p.requires_grad:  # not those frozen for now
                p.mul_(1.0 - group["lr"] * wd)


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
    else:  # constant
        lr = base_lr
    if cfg.warmup_epochs > 0 and t < cfg.warmup_epochs:
        lr *= t / cfg.warmup_epochs
    return lr


class Schedule:
    """Sets every group's learning rate to its `initial_lr` times one function of the step count, and holds nothing
    else (as nanoGPT sets each group's lr from one schedule function). Its state is the step count, so resuming,
    with this recipe's learning rates or new ones, is `load_state_dict`: the rates follow from the groups' own
    `initial_lr` at the checkpoint's step. State dicts carry `last_epoch` (the steps taken), as torch's schedulers do.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[[int], float],
                 group_factors: dict[int, Callable[[int], float]] | None = None):
        self.optimizer, self.factor, self.last_epoch = optimizer, factor, 0
        self.group_factors = group_factors or {}  # a group's own function of the step, by its index
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._apply()

    def _apply(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = group["initial_lr"] * self.group_factors.get(i, self.factor)(self.last_epoch)

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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int,
                    steps_per_epoch: int) -> Schedule:
    """A schedule stepped once per optimizer step, over a run of `total_steps` steps. A group with `zero_at_epoch`
    (param_groups) falls linearly from its lr to 0 at that epoch's step (data.cifar.steps_in: a fraction ends
    part-way through an epoch) instead, as airbench94_muon's whitening bias."""
    base_lr = optimizer.param_groups[0]["lr"]  # every group follows the schedule scaled by its own base lr
    own = {i: (lambda step, n=steps_in(g["zero_at_epoch"], steps_per_epoch): max(0.0, 1 - step / n))
           for i, g in enumerate(optimizer.param_groups) if g.get("zero_at_epoch")}
    return Schedule(optimizer, lambda step: lr_at_step(cfg, base_lr, step, total_steps, steps_per_epoch) / base_lr,
                    own)


def lr_at_step(cfg: ScheduleConfig, base_lr: float, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step `step` of a run of `total_steps` steps, total_steps / steps_per_epoch epochs
    long (a fractional run's length as trained: data.cifar.run_steps); with per_step false it changes only at epoch
    ends and at the run's end, where it reaches the schedule's end either way."""
    t = step / steps_per_epoch if cfg.per_step or step >= total_steps else float(step // steps_per_epoch)
    return lr_at(cfg, base_lr, t, total_steps / steps_per_epoch)
