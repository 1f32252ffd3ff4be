"""A PNG grid to see what a recipe's augmentation does: one row per image, the original then augmented samples."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ... import plots
from ..cifar import load_split
from ..policies import PolicyConfig
from . import build_augment


def preview(policies: list[PolicyConfig], images: Tensor, out: Path, samples: int = 8) -> Path:
    """Write to `out` a grid of uint8 `images` [N, 3, H, W]: each row the original and `samples` draws of the
    policies (with AugMix JSD, the first AugMix view; mixup and cutmix mix rows with their neighbours)."""
    augment = build_augment(policies, num_classes=1)
    labels = torch.zeros(len(images), dtype=torch.long, device=images.device)
    view = 1 if augment.num_views > 1 else 0
    columns = [images.float() / 255] + [augment(images, labels)[0].chunk(augment.num_views)[view] for _ in range(samples)]
    fig, axes = plots.subplots(len(images), samples + 1, figsize=(1.1 * (samples + 1), 1.1 * len(images) + 0.6),
                             squeeze=False)
    for j, column in enumerate(columns):
        for i, image in enumerate(column):
            axes[i, j].imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title("original" if j == 0 else f"sample {j}", fontsize=8)
    recipe = ", ".join(" ".join([p.name] + [f"{k}={v}" for k, v in p.to_dict().items() if k != "name"])
                       for p in policies)
    fig.suptitle(recipe or "no augmentation", fontsize=9)
    return plots.save(fig, out, dpi=100)


def preview_test_images(policy: PolicyConfig, out: Path, data_dir: str | Path | None = None, images: int = 6,
                        samples: int = 8, seed: int = 0) -> Path:
    """`preview` of one policy on `images` CIFAR-10 test images drawn with `seed` (which also seeds the policy)."""
    build_augment([policy], num_classes=1)  # a bad policy fails here, before the data loads
    x, _, _ = load_split("cifar10", "test", data_dir)
    torch.manual_seed(seed)
    picked = torch.randperm(len(x))[:images]
    return preview([policy], torch.from_numpy(x)[picked], out, samples)
