"""Learned and random augmentation policies: AutoAugment, RandAugment, TrivialAugmentWide, AugMix.

Each policy samples, per image, a sequence of stages (op index, signed magnitude) from torchvision's
augmentation spaces and policy tables (torchvision.transforms.v2 is the reference; spaces.py holds the copies),
or for AugMix with magnitudes: paper (the default) from the AugMix paper's op list and levels (paper.py), then
applies every stage to the whole batch with ops.apply_ops: one batched call per op, per-sample magnitudes.
"""
from __future__ import annotations

from functools import cached_property, lru_cache

import torch
from torch import Tensor

from .. import policies
from .ops import TORCHVISION, OpSet, apply_ops, to_device
from .paper import PaperSpace
from .registry import Policy, register
from .spaces import AUTOAUGMENT, AUTOAUGMENT_POLICIES, SPACES

Stage = tuple[Tensor, Tensor]  # op index [n] (-1: no op) and magnitude [n] float64


class OpSpace:
    """A torchvision augmentation space at one image size: op names, magnitude bins [ops, bins], signed flags."""
    ops: OpSet = TORCHVISION

    def __init__(self, space: dict, num_bins: int, height: int, width: int) -> None:
        self.names = list(space)
        zeros = torch.zeros(num_bins, dtype=torch.float64)
        self.bins = torch.stack([zeros if (m := fn(num_bins, height, width)) is None else m.double()
                                 for fn, _ in space.values()])
        self.signed = torch.tensor([signed for _, signed in space.values()])

    def magnitude(self, op: Tensor, bin: Tensor) -> Tensor:
        """The magnitude of bin `bin` of op `op` per image, negated with probability 1/2 for signed ops."""
        bins, signed = self.bins.to(op.device), self.signed.to(op.device)
        k = op.clamp(min=0)
        negate = signed[k] & (torch.rand(op.shape, device=op.device) <= 0.5)
        return torch.where(negate, -bins[k, bin], bins[k, bin])


@lru_cache(maxsize=None)
def op_space(space_name: str, num_bins: int, height: int, width: int) -> OpSpace:
    """The op space of a torchvision transform class ("AutoAugment", ..., "AugMix-partial")."""
    return OpSpace(SPACES[space_name], num_bins, height, width)


def as_uint8(images: Tensor) -> Tensor:
    """Ops work on uint8 like torchvision; float images in [0, 1] (after a mixing policy) are rounded back."""
    return images if images.dtype == torch.uint8 else images.mul(255).round_().to(torch.uint8)


class OpPolicy(Policy):
    """A policy that samples stages of ops and applies them in turn."""
    interpolation: str

    def sample(self, n: int, height: int, width: int, device: torch.device
               ) -> tuple[OpSpace | PaperSpace, list[Stage]]:
        raise NotImplementedError

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        images = as_uint8(images)
        # the choices are drawn on the CPU: apply_ops plans the batch without waiting for the images' device
        space, stages = self.sample(images.shape[0], *images.shape[-2:], torch.device("cpu"))
        rows = torch.arange(images.shape[0])  # images[j] is input image rows[j]
        for op, magnitude in stages:
            images, order = apply_ops(images, space.names, op[rows], magnitude[rows], self.interpolation, space.ops)
            rows = rows[order]
        inverse = torch.empty_like(rows)
        inverse[rows] = torch.arange(len(rows))
        # index_select: fast on CPU, unlike index_copy_
        return images.index_select(0, to_device(inverse, images.device)), targets


@register(policies.AutoAugment)
class AutoAugment(policies.AutoAugment, OpPolicy):
    """AutoAugment: one of the learned sub-policies per image, each two ops applied with their probabilities."""

    @cached_property
    def table(self) -> tuple[Tensor, Tensor, Tensor]:
        """The policy's sub-policies [subs, 2]: op index, probability and magnitude bin of each stage."""
        names = list(AUTOAUGMENT)
        table = AUTOAUGMENT_POLICIES[self.policy]
        return (torch.tensor([[names.index(name) for name, _, _ in sub] for sub in table]),
                torch.tensor([[p for _, p, _ in sub] for sub in table]),
                torch.tensor([[b or 0 for _, _, b in sub] for sub in table]))

    def sample(self, n: int, height: int, width: int, device: torch.device) -> tuple[OpSpace, list[Stage]]:
        space = op_space("AutoAugment", 10, height, width)
        sub = torch.randint(len(self.table[0]), (n,), device=device)
        stages = []
        for i in range(2):
            op, p, bin = (t.to(device)[sub, i] for t in self.table)
            op = torch.where(torch.rand(n, device=device) <= p, op, -1)
            stages.append((op, space.magnitude(op, bin)))
        return space, stages


@register(policies.RandAugment)
class RandAugment(policies.RandAugment, OpPolicy):
    """RandAugment: `num_ops` ops drawn uniformly per image, all at magnitude bin `magnitude`."""

    def sample(self, n: int, height: int, width: int, device: torch.device) -> tuple[OpSpace, list[Stage]]:
        space = op_space("RandAugment", self.num_magnitude_bins, height, width)
        stages = []
        for _ in range(self.num_ops):
            op = torch.randint(len(space.names), (n,), device=device)
            stages.append((op, space.magnitude(op, torch.full_like(op, self.magnitude))))
        return space, stages


@register(policies.TrivialAugment)
class TrivialAugmentWide(policies.TrivialAugment, OpPolicy):
    """TrivialAugment (wide space): one op per image at a uniformly drawn magnitude bin."""

    def sample(self, n: int, height: int, width: int, device: torch.device) -> tuple[OpSpace, list[Stage]]:
        space = op_space("TrivialAugmentWide", self.num_magnitude_bins, height, width)
        op = torch.randint(len(space.names), (n,), device=device)
        return space, [(op, space.magnitude(op, torch.randint(self.num_magnitude_bins, (n,), device=device)))]


@register(policies.AugMix)
class AugMix(policies.AugMix, OpPolicy):
    """AugMix: a convex mix of the image and `mixture_width` chains of 1-3 (or `chain_depth`) random ops.

    magnitudes: paper runs the AugMix paper's augmentations.py (paper.py: PIL's ops, each op's level drawn
    uniformly from [0.1, severity) at every application); torchvision runs torchvision's AugMix (its space, one of
    the first `severity` of 10 magnitude bins). Both draw each chain's depth and ops, and mix as the paper does.

    With jsd: true the output holds three views of each image, view-major: the image as it came in
    (the clean view) and two independent AugMix views; the loss adds jsd_lambda * JSD of their predictions.
    """

    def sample(self, n: int, height: int, width: int, device: torch.device
               ) -> tuple[OpSpace | PaperSpace, list[Stage]]:
        """The stages of one chain per image: depth 1-3 (or chain_depth), ops uniform; levels uniform on
        [0.1, severity) (paper) or bins below severity (torchvision)."""
        if self.magnitudes == "paper":
            space = PaperSpace(self.all_ops)
        else:
            space = op_space("AugMix" if self.all_ops else "AugMix-partial", 10, height, width)
        depth = torch.randint(1, 4, (n,), device=device) if self.chain_depth < 0 else None
        stages = []
        for step in range(3 if depth is not None else self.chain_depth):
            op = torch.randint(len(space.names), (n,), device=device)
            if depth is not None:
                op = torch.where(step < depth, op, -1)
            if self.magnitudes == "paper":
                stages.append((op, space.level(op, self.severity)))
            else:
                stages.append((op, space.magnitude(op, torch.randint(self.severity, (n,), device=device))))
        return space, stages

    def augmix(self, images: Tensor, views: int) -> Tensor:
        """`views` independent AugMix views of uint8 images [n, ...], view-major, float32 in [0, 1].

        All views' chains run as one batch. torchvision truncates the mix to uint8; we keep it in float.
        """
        n = images.shape[0]
        def dirichlet(k: int) -> Tensor:  # drawn on the CPU, as the ops: no device sync
            return torch.distributions.Dirichlet(torch.full((views * n, k), float(self.alpha))).sample()

        m = dirichlet(2)  # Beta(alpha, alpha): weight of the original vs the chains
        weights = to_device(dirichlet(self.mixture_width) * m[:, 1:], images.device)
        m = to_device(m, images.device)  # weights: [views * n, width]
        chains, _ = super().__call__(images.repeat(views * self.mixture_width, 1, 1, 1), None)
        chains = chains.view(self.mixture_width, views * n, -1)  # chain-major, like images.repeat
        mix = images.view(1, n, -1).float() * m[:, :1].view(views, n, 1)
        mix = mix.view(views * n, -1)
        for i in range(self.mixture_width):
            mix.addcmul_(chains[i], weights[:, i:i + 1])  # uint8 chains promote on the fly
        return mix.view(views * n, *images.shape[1:]).div_(255)

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        images = as_uint8(images)
        if not self.jsd:
            return self.augmix(images, 1), targets
        return torch.cat([images.float().div_(255), self.augmix(images, 2)]), targets
