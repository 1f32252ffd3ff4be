"""Calibration of a classifier's confidence: expected calibration error and reliability diagrams.

Confidence is the top-class probability. Bins split (0, 1] into `bins` equal-width intervals
(lo, hi]; ECE = sum over bins of |bin| / N * |accuracy(bin) - mean confidence(bin)| (Guo et al., 2017).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor


def _binned(probs: Tensor | np.ndarray, labels: Tensor | np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """Per-bin sample counts, accuracies and mean confidences (0 for empty bins)."""
    probs = probs.detach().cpu().numpy() if isinstance(probs, Tensor) else np.asarray(probs)
    labels = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (len(probs),) or len(probs) == 0:
        raise ValueError(f"probs must be [N, K] and labels [N] with N > 0, got {list(probs.shape)} and {list(labels.shape)}")
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    probs = probs.astype(np.float64)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # bin b holds (b/bins, (b+1)/bins]
    counts = np.bincount(which, minlength=bins)
    safe = np.maximum(counts, 1)
    accuracy = np.bincount(which, weights=correct, minlength=bins) / safe
    mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / safe
    return counts, accuracy, mean_confidence


def _ece(counts: np.ndarray, accuracy: np.ndarray, confidence: np.ndarray) -> float:
    return float(np.sum(counts / counts.sum() * np.abs(accuracy - confidence)))


def expected_calibration_error(probs: Tensor | np.ndarray, labels: Tensor | np.ndarray, bins: int = 15) -> float:
    """ECE of class probabilities [N, K] (rows sum to 1, e.g. softmax outputs) against labels [N]."""
    return _ece(*_binned(probs, labels, bins))


def reliability_diagram(probs: Tensor | np.ndarray, labels: Tensor | np.ndarray, out: str | Path,
                        bins: int = 15, title: str = "") -> Path:
    """Reliability diagram PNG: accuracy per confidence bin against the diagonal, with the gap to each bin's
    mean confidence shaded and the ECE in the legend; below it, the share of samples per bin."""
    from .. import plots  # matplotlib only when a figure is drawn

    counts, accuracy, confidence = _binned(probs, labels, bins)
    ece = _ece(counts, accuracy, confidence)
    filled = counts > 0
    edges = np.linspace(0, 1, bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1 / bins

    fig, (top, bottom) = plots.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres[filled], accuracy[filled], width=width, color="tab:blue", alpha=0.8, edgecolor="black", linewidth=0.5,
            label="accuracy")
    top.bar(centres[filled], (confidence - accuracy)[filled], bottom=accuracy[filled], width=width,
            facecolor="none", edgecolor="tab:red", hatch="///", linewidth=1.0, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.plot([], [], " ", label=f"ECE = {ece:.2%} ({bins} bins)")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(title or "Reliability diagram")
    top.legend(loc="upper left", fontsize=9)
    top.grid(alpha=plots.GRID_ALPHA)

    bottom.bar(centres, counts / counts.sum(), width=width, color="tab:gray", edgecolor="black", linewidth=0.5)
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("share of samples")
    bottom.grid(alpha=plots.GRID_ALPHA)
    return plots.save(fig, out)
