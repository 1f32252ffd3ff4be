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


TTA_VIEWS = {"none": 1, "flip": 2, "flip_translate": 6}  # len(tta_views(x, tta))


def retested(n: int, tta_fraction: float | None) -> int:
    """How many of `n` images `predict_logits` scores again with the TTA views after the plain pass: int(n x
    tta_fraction), hiverge's count (0 without `tta_fraction`: then every image gets the views and no plain pass)."""
    return 0 if tta_fraction is None else int(n * tta_fraction)


def forward_passes(n: int, tta: TTAMode, tta_fraction: float | None = None) -> int:
    """Images through the model when `predict_logits` scores `n` images: every view of each, or with `tta_fraction`
    one plain pass of each plus every view of the retested ones (a FLOP count's multiplier of forward FLOPs)."""
    return n * TTA_VIEWS[tta] if tta_fraction is None else n + retested(n, tta_fraction) * TTA_VIEWS[tta]


@torch.no_grad()
def predict_logits(model: nn.Module, images: Tensor, data: Data, batch_size: int, device: torch.device, *,
                   precision: Precision = "auto", tta: TTAMode = "none", tta_fraction: float | None = None) -> Tensor:
    """float32 logits [N, K] of uint8 images [N, 3, H, W], in eval mode, averaged over the `tta` views.

    With `tta_fraction` (hiverge/cifar10-speedrun's selective TTA) every image is first scored plainly, and only
    the `retested` least confident of them (lowest top softmax probability over all N) get the `tta` views' logits
    instead; the others keep their plain ones. Recipe.validate checks `tta` and `tta_fraction`.
    """
    was_training = model.training
    model.eval()
    if tta_fraction is None:
        logits = _scores(model, images, data, batch_size, device, precision, tta)
    else:
        logits = _scores(model, images, data, batch_size, device, precision, "none")
        k = retested(len(images), tta_fraction)
        if k:
            unsure = logits.softmax(1).amax(1).topk(k, largest=False).indices
            logits[unsure] = _scores(model, images[unsure.to(images.device)], data, batch_size, device, precision, tta)
    model.train(was_training)
    return logits


def _scores(model: nn.Module, images: Tensor, data: Data, batch_size: int, device: torch.device,
            precision: Precision, tta: TTAMode) -> Tensor:
    """The `tta` logits of every image, in batches of `batch_size`, the model already in eval mode."""
    out = []
    for start in range(0, len(images), batch_size):
        x = data.normalize(images[start:start + batch_size].to(device).float() / 255)
        logits = 0
        for weight, view in tta_views(x, tta):
            with autocast(device, precision):
                logits = logits + weight * model(view.contiguous(memory_format=torch.channels_last)).float()
        out.append(logits)
    return torch.cat(out)


def evaluate_split(model: nn.Module, split: tuple[Tensor, Tensor], data: Data, batch_size: int,
                   device: torch.device, *, precision: Precision = "auto", ddp: Dist = Dist(),
                   tta: TTAMode = "none", tta_fraction: float | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on a split; under DDP each rank scores its share (with `tta_fraction`, the
    least confident of its share) and the sums are reduced."""
    images, labels = split[0][ddp.rank::ddp.world_size], split[1][ddp.rank::ddp.world_size]
    logits = predict_logits(model, images, data, batch_size, device, precision=precision, tta=tta,
                            tta_fraction=tta_fraction)
    labels = labels.to(device)
    totals = torch.stack([F.cross_entropy(logits, labels, reduction="sum"),
                          (logits.argmax(1) == labels).sum().float(),
                          torch.tensor(float(len(labels)), device=device)])
    if ddp.world_size > 1:
        dist.all_reduce(totals)
    loss, correct, n = totals.tolist()
    return loss / n, correct / n
