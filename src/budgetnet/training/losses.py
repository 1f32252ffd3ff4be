"""Training losses: cross-entropy on hard or soft targets, and AugMix's Jensen-Shannon consistency term."""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.policies import JSD_LAMBDA


def cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy; `targets` are class indices [B] or probabilities [B, K] (mixup, cutmix)."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def jsd(*logits: Tensor) -> Tensor:
    """Jensen-Shannon divergence between the softmax predictions of several views (AugMix, eq. 2).

    JS(p_1..p_m) = 1/m sum_i KL(p_i || M) with M the mean of the p_i, clamped to [1e-7, 1] as in the AugMix
    code. Every term is computed from log-probabilities: a probability that underflows to 0 (a logit gap
    above about 104 in fp32) then has a zero gradient, as in torch <= 1.12, instead of NaN.
    """
    log_probs = torch.stack([F.log_softmax(z.float(), dim=1) for z in logits])
    log_mixture = (torch.logsumexp(log_probs, dim=0) - math.log(len(logits))).clamp(math.log(1e-7), 0.0)
    return sum(F.kl_div(log_mixture, lp, reduction="batchmean", log_target=True) for lp in log_probs) / len(logits)


def training_loss(logits: Tensor, targets: Tensor, num_views: int = 1, jsd_lambda: float = JSD_LAMBDA,
                  label_smoothing: float = 0.0) -> Tensor:
    """Loss of one training batch whose logits hold `num_views` views of the same B images, view-major.

    With one view this is cross-entropy. With several (AugMix with JSD: clean, aug1, aug2) it is
    cross-entropy on the first (clean) view plus `jsd_lambda` times the JSD of all views.
    """
    if num_views == 1:
        return cross_entropy(logits, targets, label_smoothing)
    views = logits.chunk(num_views)
    return cross_entropy(views[0], targets, label_smoothing) + jsd_lambda * jsd(*views)
