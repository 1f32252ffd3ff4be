"""The residual network built from a ModelSpec: stem, N stages of residual blocks, pool, classifier."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .spec import EXPANSION, ModelSpec


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A kernel x kernel convolution with 'same' padding (no bias) followed by BatchNorm."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two FxF convolutions; a KxK projection shortcut where the shape changes (He et al., 2016)."""

    def __init__(self, c_in: int, c: int, f: int, k: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(c_in, c, f, stride)
        self.conv2 = conv_bn(c, c, f)
        self.shortcut = conv_bn(c_in, c, k, stride) if stride != 1 or c_in != c else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        return F.relu(self.conv2(out) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, FxF, 1x1 expand (x4); a KxK projection shortcut where the shape changes."""

    def __init__(self, c_in: int, c: int, f: int, k: int, stride: int):
        super().__init__()
        c_out = c * EXPANSION["bottleneck"]
        self.conv1 = conv_bn(c_in, c, 1)
        self.conv2 = conv_bn(c, c, f, stride)
        self.conv3 = conv_bn(c, c_out, 1)
        self.shortcut = conv_bn(c_in, c_out, k, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        return F.relu(self.conv3(out) + self.shortcut(x))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """stem (F_1 conv, BN, ReLU, stride 1) -> N stages of B_i blocks (stride 2 from stage 2) -> PxP avg pool -> fc."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        chans, kernels, shortcuts = spec.stage_channels(), spec.stage_kernels(), spec.stage_shortcut_kernels()
        self.stem = conv_bn(spec.in_channels, chans[0], kernels[0])
        block, c_in, stages = BLOCKS[spec.block], chans[0], []
        for i, (n, c, f, k) in enumerate(zip(spec.blocks, chans, kernels, shortcuts)):
            layers = []
            for b in range(n):
                layers.append(block(c_in, c, f, k, stride=2 if (i > 0 and b == 0) else 1))
                c_in = c * EXPANSION[spec.block]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AvgPool2d(spec.pool_size)
        self.fc = nn.Linear(c_in * spec.final_size() ** 2, spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        x = self.stages(x)
        return self.fc(self.pool(x).flatten(1))


def build_model(spec: ModelSpec) -> ResNet:
    """The nn.Module of a design."""
    return ResNet(spec)


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters of a built module (the ground truth the closed form must match)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
