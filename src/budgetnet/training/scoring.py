"""Scoring a model on images: its logits averaged over test-time-augmented views, and its loss and accuracy on a
split (what the loop reports each epoch; evaluation, robustness and prediction score with the same functions)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Precision, TTAMode
from ..data.cifar import Data
from .runtime import Dist, autocast


def tta_views(x: Tensor, tta: TTAMode = "none") -> list[tuple[float, Tensor]]:
    """(weight, view) pairs whose weighted logits average to the test-time-augmented prediction.

    flip: the image and its mirror, 1/2 each. flip_translate (airbench): that pair weighs 1/2, and the pairs of the
    image shifted by one pixel up-left and down-right (reflect padding) weigh 1/4 each. `tta` is a recipe's, which
    Recipe.validate checks.
    """
    if tta == "none":
        return [(1.0, x)]
    pair = lambda v, w: [(w / 2, v), (w / 2, v.flip(-1))]
    if tta == "flip":
        return pair(x, 1.0)
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return pair(x, 0.5) + pair(padded[..., :h, :w], 0.25) + pair(padded[..., 2:, 2:], 0.25)


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, data: Data, batch_size: int, device: torch.device,
                   *, precision: Precision = "auto", tta: TTAMode = "none") -> Tensor:
    """float32 logits [N, K] of uint8 images [N, 3, H, W], in eval mode, averaged over the `tta` views."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = data.normalize(images[start:start + batch_size].to(device).float() / 255)
        logits = 0
        for weight, view in tta_views(x, tta):
            with autocast(device, precision):
                logits = logits + weight * model(view.contiguous(memory_format=torch.channels_last)).float()
        out.append(logits)
    model.train(was_training)
    return torch.cat(out)


def evaluate_split(model: nn.Module, split: tuple[Tensor, Tensor], data: Data, batch_size: int,
                   device: torch.device, *, precision: Precision = "auto", ddp: Dist = Dist(),
                   tta: TTAMode = "none") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on a split; under DDP each rank scores its share and the sums are reduced."""
    images, labels = split[0][ddp.rank::ddp.world_size], split[1][ddp.rank::ddp.world_size]
    logits = predict_logits(model, images, data, batch_size, device, precision=precision, tta=tta)
    labels = labels.to(device)
    totals = torch.stack([F.cross_entropy(logits, labels, reduction="sum"),
                          (logits.argmax(1) == labels).sum().float(),
                          torch.tensor(float(len(labels)), device=device)])
    if ddp.world_size > 1:
        dist.all_reduce(totals)
    loss, correct, n = totals.tolist()
    return loss / n, correct / n
