"""What a search costs on this device before it starts: the smallest and the largest design the budgets admit (by
GFLOP per image), an epoch of each timed on the training loop with a few steps of random images, and the total
range over the trials; nothing is written."""
from __future__ import annotations

import dataclasses

from ...config import Recipe
from ...training.provenance import device_name
from ...training.runtime import resolve_device
from ..experiment.cost import hours, measure_epoch_seconds
from .space import Space, describe, design_points, trial_designs
from .worker import check_trials, search_budgets

EVAL_PROBE = 100  # images of the timed evaluation batch (scaled to the recipe's validation and test images)


def search_cost(space: Space, *, trials: int | None = None, total_trials: int | None = None,
                budget: int | str | None = None, max_gflops: float | str | None = None, repair: str = "fit-channels",
                device: str | None = None, steps: int = 1) -> str:
    """The dry run of `budgetnet search`: the trials (`total_trials`, else `trials`), their epochs, the seconds an
    epoch takes on the smallest and the largest design the budgets admit (each trained for `steps` steps of
    random images after as many to warm up, its evaluation timed on EVAL_PROBE images), and the total range,
    without pruning. The designs are those of every combination of the space's model keys, or of a sample when
    there are more than space.DESIGN_LIMIT."""
    check_trials(trials, total_trials)
    budget, max_gflops = search_budgets(space, budget, max_gflops, repair)
    points, exact = design_points(space)
    designs = [r for pair in trial_designs(space, budget, max_gflops, repair, points) for r in pair]
    if not designs:
        return f"space {space.name}: no design of the {len(points):,} tried fits the budgets; nothing to train"
    by_gflops = sorted(designs, key=lambda r: r.model.gflop_per_image())
    ends = [by_gflops[0], by_gflops[-1]]
    for recipe in ends:
        recipe.device = device or recipe.device
    seconds = [measure_epoch_seconds(_probe(r), steps) for r in ends]
    n = total_trials if total_trials is not None else trials
    epochs = max(r.epochs for r in ends)
    where = resolve_device(ends[0].device)
    budgets = f"{ends[0].budget:,} parameters" + (f" and {ends[0].max_gflops:g} GFLOP per image"
                                                   if ends[0].max_gflops is not None else "")
    tried = (f"every combination of its model keys ({len(points):,})" if exact
             else f"{len(points):,} of its combinations of model keys drawn at random")
    lines = [f"space {space.name} on {where} ({device_name(where)}): {n} trials of up to {epochs} epochs; designs "
             f"within {budgets}, from {tried}"]
    for label, recipe, s in zip(("smallest", "largest"), ends, seconds):
        lines.append(f"  {label:<8} {recipe.model.gflop_per_image():.4f} GFLOP/image  "
                     f"{recipe.model.count_params():>11,} params  {s:8.1f} s/epoch  {describe(recipe.model)}")
    low, high = (n * epochs * s for s in seconds)
    lines.append(f"total {hours(low)} to {hours(high)} of training ({n} trials x {epochs} epochs, without pruning; "
                 f"seconds per epoch measured with {steps} step{'s' * (steps > 1)} of random images)")
    return "\n".join(lines)


def _probe(recipe: Recipe) -> Recipe:
    """The recipe whose epoch is timed: its evaluation batch cut to EVAL_PROBE images, so that timing the largest
    design on a CPU takes seconds (the evaluation's time is scaled to the images the recipe evaluates)."""
    return dataclasses.replace(recipe, eval_batch_size=min(recipe.eval_batch_size, EVAL_PROBE))
