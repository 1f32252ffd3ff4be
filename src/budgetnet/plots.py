"""Every figure's style and saving: one colour scheme, one save, and the per-epoch curves that reports and model
cards share. Figures are `matplotlib.figure.Figure`s drawn without pyplot, so no backend is chosen or switched (a
notebook's stays as it is) and no figure stays open in pyplot's global registry.

    fig, ax = plots.subplots(figsize=(8, 5))
    ax.plot(...)
    plots.save(fig, out / "figure.png")        # creates the folder, lays out, writes the PNG
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import atomic

DPI = 120
GRID_ALPHA = 0.3
# the fields of a metric row (training.rundir.MetricRow) that plot_curves draws, with their axis labels
CURVE_METRICS = {"train_loss": "train loss", "test_loss": "test loss", "train_acc": "train accuracy (%)",
                 "test_acc": "test accuracy (%)", "val_loss": "validation loss", "val_acc": "validation accuracy (%)"}


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
             **kwargs: Any) -> tuple[Figure, Any]:
    """(figure, axes) as pyplot's `subplots` returns them, on a pyplot-free `Figure`; hand the figure to `save`
    when drawn. `kwargs` go to `Figure.subplots` (sharex, squeeze, gridspec_kw, ...)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write `fig` to `path` as PNG (creating its folder), tightly laid out, whole or not at all (atomic); return
    the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def colours(labels: list[str]) -> dict[str, tuple]:
    """One distinct colour per label, in order (tab10, or tab20 beyond ten labels)."""
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _draw_metric(ax, groups: dict[str, list[list[Any]]], metric: str, palette: dict) -> bool:
    """Each run as a thin line and, with several runs in a group, their mean (epochs all share) as a thick one."""
    drawn = False
    scale = 100 if metric.endswith("_acc") else 1
    for label, runs in groups.items():
        series = [{r.epoch: scale * getattr(r, metric) for r in rows if getattr(r, metric) is not None}
                  for rows in runs]
        series = [s for s in series if s]
        if not series:
            continue
        drawn = True
        many = len(series) > 1
        for s in series:
            ax.plot(list(s), list(s.values()), color=palette[label], lw=0.8 if many else 1.8,
                    alpha=0.35 if many else 1.0, marker=None if many or len(s) > 30 else "o", ms=3,
                    label=None if many else label)
        if many:
            epochs = sorted(set.intersection(*(set(s) for s in series)))
            ax.plot(epochs, [statistics.fmean(s[e] for s in series) for e in epochs], color=palette[label], lw=2,
                    label=f"{label} (mean of {len(series)})")
    return drawn


def plot_curves(groups: dict[str, list[list[Any]]], metrics: list[str], path: str | Path, title: str,
                names: dict[str, str] | None = None) -> Path:
    """One panel per metric of CURVE_METRICS (per epoch, accuracies in %), one colour per group of runs.

    `groups` maps a label to the metric rows (rundir.MetricRow, one per epoch) of each of its runs;
    `names` overrides a metric's axis label (e.g. the loss a run actually trained with).
    """
    unknown = [m for m in metrics if m not in CURVE_METRICS]
    if unknown:
        raise ValueError(f"no curve for {', '.join(unknown)}: a metric row's curves are {', '.join(CURVE_METRICS)}")
    names = {**CURVE_METRICS, **(names or {})}
    cols = 2 if len(metrics) > 1 else 1
    rows = math.ceil(len(metrics) / cols)
    fig, axes = subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    palette = colours(list(groups))
    for ax, metric in zip(axes.flat, metrics):
        name = names[metric]
        if not _draw_metric(ax, groups, metric, palette):
            ax.text(0.5, 0.5, f"no {name} recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.set_title(f"{name.removesuffix(' (%)')} per epoch")
        ax.grid(alpha=GRID_ALPHA)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title)
    return save(fig, path)
