"""Weight averaging for training: an EMA of the weights (for evaluation) and Lookahead (for the optimizer).

Both work on the weights and the floating-point BN buffers and keep their state on the device; neither reads a
value back to the host except AveragedModel's step counter, which is why the EMA updates only every k steps.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import EmaConfig, LookaheadConfig


def build_ema(model: nn.Module, cfg: EmaConfig) -> AveragedModel | None:
    """torch's AveragedModel with an EMA of the parameters and BN buffers, or None when disabled (`cfg` is a
    recipe's, which Recipe.validate checks)."""
    if not cfg.enabled:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.decay), use_buffers=True)


def _float_state(model: nn.Module) -> list[Tensor]:
    return [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]


class Lookahead:
    """Slow weights that every k steps move alpha of the way to the model's (fast) weights, which restart there
    (`cfg` is a recipe's, which Recipe.validate checks)."""

    def __init__(self, model: nn.Module, cfg: LookaheadConfig, total_steps: int):
        self.cfg, self.total_steps = cfg, total_steps
        self.fast = _float_state(model)
        self.slow = [t.detach().clone() for t in self.fast]

    def alpha_at(self, step: int) -> float:
        """The interpolation weight after `step` optimizer steps (annealed from 1 as (t/T)^3 when asked)."""
        if not self.cfg.anneal:
            return self.cfg.alpha
        return 1 - (1 - self.cfg.alpha) * min(step / self.total_steps, 1.0) ** 3

    @torch.no_grad()
    def step(self, step: int) -> None:
        """Call after every optimizer step with the count of steps done; acts every k-th step."""
        if step % self.cfg.k == 0:
            self.sync(self.alpha_at(step))

    @torch.no_grad()
    def sync(self, alpha: float) -> None:
        """slow <- slow + alpha (fast - slow); fast <- slow."""
        for slow, fast in zip(self.slow, self.fast):
            slow.lerp_(fast, alpha)
            fast.copy_(slow)

    @torch.no_grad()
    def finish(self) -> None:
        """End training on the slow weights."""
        for slow, fast in zip(self.slow, self.fast):
            fast.copy_(slow)

    def state_dict(self) -> dict:
        return {"slow": self.slow}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for slow, saved in zip(self.slow, state["slow"], strict=True):
            slow.copy_(saved)
