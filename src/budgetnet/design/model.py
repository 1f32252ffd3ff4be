"""The residual network built from a ModelSpec: stem, N stages of residual blocks, pool, classifier."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from .spec import EXPANSION, WHITEN_KERNEL, ModelSpec, budget_excess, fit_channels, with_width


def norm(c: int, spec: ModelSpec) -> nn.BatchNorm2d:
    """BatchNorm with the design's momentum and epsilon; without `bn_scale` its scale stays 1 (not trained)."""
    bn = nn.BatchNorm2d(c, eps=spec.bn_eps, momentum=spec.bn_momentum)
    bn.weight.requires_grad_(spec.bn_scale)
    return bn


def activation(spec: ModelSpec, inplace: bool = False) -> nn.Module:
    """The design's activation module: ReLU, GELU or SiLU."""
    if spec.activation == "gelu":
        return nn.GELU()
    if spec.activation == "silu":
        return nn.SiLU(inplace=inplace)
    return nn.ReLU(inplace=inplace)


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, *, spec: ModelSpec) -> nn.Sequential:
    """A kernel x kernel convolution with 'same' padding (no bias) followed by BatchNorm."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False), norm(c_out, spec))


def shortcut(c_in: int, c_out: int, kernel: int, stride: int, spec: ModelSpec) -> nn.Module:
    """A block's shortcut: the identity, or a kernel x kernel projection (conv + BatchNorm) where the block changes
    the shape (a stride or a new channel count)."""
    return conv_bn(c_in, c_out, kernel, stride, spec=spec) if stride != 1 or c_in != c_out else nn.Identity()


def conv_pool_bn(c_in: int, c_out: int, kernel: int, spec: ModelSpec) -> nn.Sequential:
    """A stage opening that halves the size: conv ('same'), 2x2 max-pool, BatchNorm, ReLU (airbench style)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.MaxPool2d(2),
                         norm(c_out, spec), activation(spec, inplace=True))


class WhiteningStem(nn.Module):
    """A frozen patch-whitening convolution ('same' padding) then ReLU; set its filters with `init_whitening`.

    The filters are the eigenvectors of the training patches' second-moment matrix scaled by
    1/sqrt(eigenvalue + eps), and their negatives, so that the ReLU keeps both signs (Keller Jordan's airbench).
    With padding 'valid' the output is kernel - 1 pixels smaller (airbench's stem). They are a buffer: saved in checkpoints, never trained, not counted as trainable parameters. With `bias` a
    zero-initialised bias follows the filters (airbench94 trains it for its first epochs: see `train_whiten_bias`).
    """

    def __init__(self, c_in: int, kernel: int = WHITEN_KERNEL, bias: bool = False, act: nn.Module | None = None,
                 padding: str = "same"):
        super().__init__()
        self.padding = padding
        self.register_buffer("weight", torch.zeros(2 * c_in * kernel * kernel, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(2 * c_in * kernel * kernel)) if bias else None
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        k = self.weight.shape[-1]  # 'same' padding for an even kernel: the extra row and column go last
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.padding == "same":
            x = F.pad(x, ((k - 1) // 2, k // 2) * 2)
        return self.act(F.conv2d(x, self.weight.to(x.dtype), bias))


class BasicBlock(nn.Module):
    """Two FxF convolutions; a KxK projection shortcut where the shape changes (He et al., 2016)."""

    def __init__(self, c_in: int, c: int, f: int, k: int, stride: int, spec: ModelSpec):
        super().__init__()
        self.conv1 = conv_bn(c_in, c, f, stride, spec=spec)
        self.conv2 = conv_bn(c, c, f, spec=spec)
        self.shortcut = shortcut(c_in, c, k, stride, spec)
        self.act = activation(spec)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.conv1(x))
        return self.act(self.conv2(out) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, FxF, 1x1 expand (x4); a KxK projection shortcut where the shape changes."""

    def __init__(self, c_in: int, c: int, f: int, k: int, stride: int, spec: ModelSpec):
        super().__init__()
        c_out = c * EXPANSION["bottleneck"]
        self.conv1 = conv_bn(c_in, c, 1, spec=spec)
        self.conv2 = conv_bn(c, c, f, stride, spec=spec)
        self.conv3 = conv_bn(c, c_out, 1, spec=spec)
        self.shortcut = shortcut(c_in, c_out, k, stride, spec)
        self.act = activation(spec)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.conv1(x))
        out = self.act(self.conv2(out))
        return self.act(self.conv3(out) + self.shortcut(x))


class SingleBlock(nn.Module):
    """One FxF convolution and BatchNorm; a KxK projection shortcut where the shape changes. After a 'pool' stage
    opening it is airbench's conv group (conv, pool, BN, act, conv, BN, act) with a residual connection."""

    def __init__(self, c_in: int, c: int, f: int, k: int, stride: int, spec: ModelSpec):
        super().__init__()
        self.conv1 = conv_bn(c_in, c, f, stride, spec=spec)
        self.shortcut = shortcut(c_in, c, k, stride, spec) if spec.residual else None
        self.act = activation(spec)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        return self.act(out if self.shortcut is None else out + self.shortcut(x))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck, "single": SingleBlock}


class ResNet(nn.Module):
    """stem (F_1 conv, BN, ReLU, or frozen whitening) -> N stages of B_i blocks (stride 2 from stage 2, or each
    stage opened by conv + max-pool) -> PxP average (or max) pool -> fc."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        chans, kernels, shortcuts = spec.stage_channels(), spec.stage_kernels(), spec.stage_shortcut_kernels()
        self.stem = (WhiteningStem(spec.in_channels, bias=spec.whiten_bias_epochs > 0, act=activation(spec),
                                   padding=spec.whiten_padding)
                     if spec.stem == "whiten" else
                     nn.Sequential(*conv_bn(spec.in_channels, chans[0], kernels[0], spec=spec),
                                   activation(spec, inplace=True)))
        block, c_in, stages = BLOCKS[spec.block], spec.stem_channels(), []
        for i, (n, c, f, k) in enumerate(zip(spec.blocks, chans, kernels, shortcuts)):
            layers = []
            if spec.downsample == "pool":
                layers.append(conv_pool_bn(c_in, c * EXPANSION[spec.block], f, spec))
                c_in = c * EXPANSION[spec.block]
            for b in range(n):
                stride = 2 if (i > 0 and b == 0 and spec.downsample == "stride") else 1
                layers.append(block(c_in, c, f, k, stride, spec))
                c_in = c * EXPANSION[spec.block]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = (nn.MaxPool2d if spec.pool_type == "max" else nn.AvgPool2d)(spec.pool_size)
        self.fc = nn.Linear(c_in * spec.final_size() ** 2, spec.num_classes)
        if spec.fc_init_std is not None:  # airbench94_muon's head: its random start rescaled to std 1
            with torch.no_grad():
                self.fc.weight.mul_(spec.fc_init_std / self.fc.weight.std())
        self.output_scale = spec.output_scale
        if spec.dirac_init:  # airbench's Conv: the first C_in filters pass their input through unchanged
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    with torch.no_grad():
                        nn.init.dirac_(m.weight[:m.weight.shape[1]])

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        logits = self.fc(self.pool(x).flatten(1))
        return logits if self.output_scale == 1 else logits * self.output_scale


def train_whiten_bias(model: nn.Module, trains: bool) -> None:
    """Before a step: whether the whitening bias trains in it (training.loop: during the design's first
    `whiten_bias_epochs`, counted in steps, so a resumed run freezes it when an uninterrupted one would); designs
    without one are left as they are."""
    for m in model.modules():
        if isinstance(m, ResNet) and isinstance(m.stem, WhiteningStem) and m.stem.bias is not None:
            m.stem.bias.requires_grad_(trains)


@torch.no_grad()
def init_whitening(model: ResNet, images: Tensor, eps: float = 5e-4) -> None:
    """Set a whitening stem's filters from normalized float images [N, C, H, W] (a few thousand suffice)."""
    stem = model.stem
    if not isinstance(stem, WhiteningStem):
        return
    c, k = images.shape[1], stem.weight.shape[-1]
    patches = images.float().unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (eigenvectors.T / (eigenvalues[:, None] + eps).sqrt()).reshape(-1, c, k, k)
    stem.weight.copy_(torch.cat([filters, -filters]))


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters of a built module (the ground truth the closed form must match; a freshly built
    ResNet trains every parameter its optimizer will ever update, the whitening bias included)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_image(spec: ModelSpec) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of one image through a design at its image size: {"forward", "forward_backward"}.

    Counted by torch.utils.flop_counter on a weightless (meta) model: the ground truth that the closed form the
    budgets use (ModelSpec.count_flops) must equal. The backward pass computes no gradient for the input image,
    as in training.
    """
    with torch.device("meta"):
        model = ResNet(spec)
        x = torch.empty(1, spec.in_channels, spec.image_size, spec.image_size)
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as both:
        model(x).sum().backward()
    return {"forward": forward.get_total_flops(), "forward_backward": both.get_total_flops()}


def design_report(spec: ModelSpec, budget: int, fit: bool = False, max_gflops: float | None = None) -> dict:
    """What `budgetnet params` reports: the count against the budget and the compute (forward+backward GFLOP per
    image) against `max_gflops` when given, the stage table and FLOPs per image; with `fit`, of the design widened
    or narrowed to the widest C_1 (or list of widths scaled together) within both (`fitted_channels`)."""
    result = {}
    if fit:
        result["fitted_channels"] = fit_channels(spec, budget, max_gflops)
        spec = with_width(spec, result["fitted_channels"])
    params, flops = spec.count_params(), spec.count_flops()
    return {"params": params, "params_whole_run": spec.count_params_whole_run(), "budget": budget,
            "max_gflops": max_gflops, "within_budget": not budget_excess(spec, budget, max_gflops),
            "design": spec.to_dict(), "stages": spec.stage_table(), "flops_per_image": flops,
            "gflop_per_image": flops["forward_backward"] / 1e9, **result}
