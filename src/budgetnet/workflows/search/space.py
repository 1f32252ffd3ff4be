"""Space files: a base recipe and, per dotted recipe key, an Optuna distribution (sampled always, or only `when`
earlier choices hold) or a fixed value, checked against the recipe before any trial; and the space's smallest
design, so that a budget none fits fails at once."""
from __future__ import annotations

import bisect
import copy
import itertools
import json
import math
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from ...config import DataConfig, Recipe, RecipeError, apply_overrides, load_recipe, read_yaml
from ...design.spec import BudgetError, ModelSpec, SpecError, budget_excess, fit_channels, with_width

SPACE_KEYS = ("description", "base", "params", "prune_from_epoch")
RANGE_KEYS = ("low", "high", "step", "log")
WHEN = "when"  # a params entry's condition: {earlier key: a choice or a list of choices}


@dataclass
class Space:
    """A search space: the base recipe as a mapping (fixed values applied), one distribution per sampled key, the
    conditions of the keys sampled only when earlier choices hold (key -> {earlier key: its allowed values}), and
    the first epoch after which the pruner may stop a trial."""

    name: str
    base: dict
    params: dict[str, BaseDistribution]
    description: str = ""
    prune_from_epoch: int = 1
    conditions: dict[str, dict[str, list]] = field(default_factory=dict)

    def active(self, key: str, values: dict[str, Any]) -> bool:
        """Whether `key` is sampled at a point whose earlier sampled values are `values`: each value its condition
        names was sampled and is allowed (a key without a condition: always). An unsampled key keeps the base's
        value."""
        return all(k in values and values[k] in allowed for k, allowed in self.conditions.get(key, {}).items())

    def recipe(self, values: dict[str, Any]) -> Recipe:
        """The recipe of one point: the base with `values` (dotted key -> value) applied."""
        raw = copy.deepcopy(self.base)
        apply_overrides(raw, [f"{key}={json.dumps(value)}" for key, value in values.items()])
        return load_recipe(raw)

    def suggest(self, trial: optuna.Trial, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Sample every key but `skip` whose condition holds, in the space's order, with the trial (non-scalar choices
        travel as JSON strings, decoded here)."""
        values = {}
        for key, dist in self.params.items():
            if key in skip or not self.active(key, values):
                continue
            if isinstance(dist, IntDistribution):
                values[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, FloatDistribution):
                values[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
            else:
                values[key] = _decode(trial.suggest_categorical(key, dist.choices))
        return values


def load_space(name_or_path: str | Path) -> Space:
    """Read and check a space file (a path or the name of a shipped space): every key must be a recipe key."""
    raw, path = read_yaml(name_or_path, kind="spaces")
    for key in raw:
        if key not in SPACE_KEYS:
            raise RecipeError(f"{path}: unknown space key {key!r}; a space file holds {', '.join(SPACE_KEYS)}")
    if "base" not in raw:
        raise RecipeError(f"{path}: no 'base': name the recipe the search starts from, e.g. base: demo")
    base = raw["base"]
    if isinstance(base, str):
        local = path.parent / base
        base = read_yaml(local if local.is_file() else base)[0]
    elif not isinstance(base, dict):
        raise RecipeError(f"{path}: base must be a recipe name, a recipe file or a mapping, not {base!r}")
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise RecipeError(f"{path}: params must map dotted recipe keys to ranges, choices or values")
    dists, fixed, conditions = {}, [], {}
    for key, spec in params.items():
        when = spec.get(WHEN) if isinstance(spec, dict) else None
        dist = _distribution(key, {k: v for k, v in spec.items() if k != WHEN} if when is not None else spec, path)
        if dist is None:
            if when is not None:
                raise RecipeError(f"{path}: params.{key}: '{WHEN}' conditions a sampled key (choices or a range), "
                                  f"and {key} has neither: give it choices, or drop its '{WHEN}'")
            fixed.append(f"{key}={json.dumps(spec)}")
            continue
        if when is not None:
            conditions[key] = _condition(key, when, dists, path)
        dists[key] = dist
    start = raw.get("prune_from_epoch", 1)
    if isinstance(start, bool) or not isinstance(start, int) or start < 1:
        raise RecipeError(f"{path}: prune_from_epoch must be a whole number of epochs, 1 or more, not {start!r}")
    space = Space(Path(path).stem, apply_overrides(copy.deepcopy(base), fixed), dists, raw.get("description", ""),
                  start, conditions)
    for key in width_keys(space):
        if key in conditions:
            raise RecipeError(f"{path}: params.{key}: a width sampled from a range is placed within the budgets in "
                              f"every trial, so it takes no '{WHEN}': drop it")
    _check_keys(space, path)
    dist = space.params.get("data.val_size")
    smallest = (dist.low if isinstance(dist, IntDistribution) else min(dist.choices) if dist is not None
                else (space.base.get("data") or {}).get("val_size", DataConfig.val_size))
    if not smallest or smallest <= 0:
        raise RecipeError(f"{path}: the search chooses designs on a validation split, never on the test set: "
                          "set data.val_size (e.g. 5000) in params or in the base recipe")
    return space


def _distribution(key: str, spec: Any, path: Path) -> BaseDistribution | None:
    """The Optuna distribution of one `params` entry, or None for a fixed value."""
    if not isinstance(spec, dict) or not ({"low", "high", "choices"} & spec.keys()):
        return None
    where = f"{path}: params.{key}"
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise RecipeError(f"{where}: write choices as {{choices: [a, b, ...]}} with at least one value")
        return CategoricalDistribution([_encode(c) for c in spec["choices"]])
    unknown = set(spec) - set(RANGE_KEYS)
    if unknown or not {"low", "high"} <= spec.keys():
        raise RecipeError(f"{where}: a range is {{low, high, step?, log?}}; got keys {sorted(spec)}")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), bool(spec.get("log", False))
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise RecipeError(f"{where}: low, high and step must be numbers, got {spec}")
    try:
        if all(isinstance(v, int) for v in numbers):
            return IntDistribution(low, high, log=log, step=step or 1)
        return FloatDistribution(float(low), float(high), log=log, step=step)
    except ValueError as e:
        raise RecipeError(f"{where}: {e}") from None


def _condition(key: str, when: Any, earlier: dict[str, BaseDistribution], path: Path) -> dict[str, list]:
    """A params entry's `when` as {earlier key: allowed values}; each key must be sampled from choices above it."""
    where = f"{path}: params.{key}.{WHEN}"
    if not isinstance(when, dict) or not when:
        raise RecipeError(f"{where}: write it as {{earlier key: a choice or a list of choices}}, e.g. "
                          "when: {model.pool_size: 3}")
    condition = {}
    for other, allowed in when.items():
        dist = earlier.get(other)
        if not isinstance(dist, CategoricalDistribution):
            raise RecipeError(f"{where}: {other!r} is not a key sampled from choices above {key!r}: a condition "
                              "names an earlier entry of params with choices (move that entry above this one)")
        allowed = allowed if isinstance(allowed, list) else [allowed]
        unknown = [v for v in allowed if _encode(v) not in dist.choices]
        if not allowed or unknown:
            raise RecipeError(f"{where}: give {other} one or more of its choices "
                              f"{[_decode(c) for c in dist.choices]}, not {when[other]!r}")
        condition[other] = allowed
    return condition


def _check_keys(space: Space, path: Path) -> None:
    """Apply every bound and choice to the base once, so that a misspelt key, a wrong type or a data section that
    cannot load (data.val_size beyond the training set) fails before any trial loads data or trains."""
    points = [(None, None)] + [(key, value) for key, dist in space.params.items() for value in (
        [dist.low, dist.high] if isinstance(dist, (IntDistribution, FloatDistribution))
        else [_decode(c) for c in dist.choices])]
    for key, value in points:
        try:
            space.recipe({} if key is None else {key: value}).data.validate()
        except RecipeError as e:
            raise RecipeError(f"{path}: {'' if key is None else f'params.{key}={value!r}: '}{e}") from None
        except SpecError:
            pass  # a design that only fails in combination with other values: rejected per trial


def _encode(choice: Any) -> Any:
    """Optuna's categorical choices are scalars: lists and mappings are stored as compact JSON strings."""
    return json.dumps(choice, separators=(",", ":")) if isinstance(choice, (list, dict)) else choice


def _decode(choice: Any) -> Any:
    return json.loads(choice) if isinstance(choice, str) and choice[:1] in "[{" else choice


DESIGN_LIMIT = 10_000  # model-key combinations enumerated; beyond, the budget check is skipped and the dry run samples


Choose = Callable[[str, IntDistribution], int]  # picks a width from its range, cut to what fits (a trial samples it)


def width_keys(space: Space) -> list[str]:
    """The widths the search places within the budgets, in the space's order: C_1 (`model.channels`) or each
    stage's width (`model.channels.<i>`) sampled from an int range."""
    return [k for k, d in space.params.items()
            if isinstance(d, IntDistribution) and re.fullmatch(r"model\.channels(\.\d+)?", k)]


def narrowest_widths(space: Space) -> dict[str, int]:
    """Each sampled width (`width_keys`) at the low end of its range."""
    return {key: space.params[key].low for key in width_keys(space)}


def fit_design(space: Space, model: ModelSpec, budget: int, max_gflops: float | None, repair: str,
               choose: Choose) -> tuple[ModelSpec, str | None]:
    """The design a trial trains for `model` (its other keys chosen, every sampled width at its low end:
    `narrowest_widths`) and the repair made, if any. Each sampled width, in the space's order, is picked by `choose`
    from its range cut at the widest that fits the parameter budget and `max_gflops` with the widths after it at
    their low ends, so that no pick is over a budget. When the low ends are over (or no width is sampled and the
    design is over), repair "fit-channels" scales the widths together to the widest that fits, and each sampled
    width is picked from that one value; BudgetError saying what is over when no design is trained (repair
    "reject", widths chosen from choices, or nothing fits)."""
    widths = width_keys(space)
    over = budget_excess(model, budget, max_gflops)
    if over:
        if repair == "reject" or _widths_chosen(space):
            raise BudgetError(f"the narrowest widths of the space ({model.channels}) are over budget: {over}"
                              if widths else over)
        fitted = with_width(model, fit_channels(model, budget, max_gflops))
        for key in widths:
            width = _width(fitted, key)
            choose(key, IntDistribution(width, width))
        dist = space.params.get("model.channels")
        was = f"{dist.low}..{dist.high}" if "model.channels" in widths else model.channels
        return fitted, f"C_1 {was} -> {fitted.channels}"
    for key in widths:
        dist = space.params[key]
        grid = range(dist.low, dist.high + 1, dist.step)  # the low end fits; both counts grow with the width
        fits = bisect.bisect_left(grid, True, key=lambda w: bool(budget_excess(_with(model, key, w), budget,
                                                                               max_gflops)))
        model = _with(model, key, choose(key, IntDistribution(dist.low, grid[fits - 1], log=dist.log,
                                                              step=dist.step)))
    return model, None


def _widths_chosen(space: Space) -> bool:
    """Whether a width is chosen from choices (or a float range) rather than sampled where it fits: not fitted."""
    widths = width_keys(space)
    return any(k.split(".")[:2] == ["model", "channels"] and k not in widths for k in space.params)


def _width(model: ModelSpec, key: str) -> int:
    """The width `key` (a `width_keys` key) names in `model`."""
    return model.channels if key == "model.channels" else model.channels[int(key.rsplit(".", 1)[1])]


def _with(model: ModelSpec, key: str, width: int) -> ModelSpec:
    """`model` with the width `key` names set to `width`."""
    if key == "model.channels":
        return replace(model, channels=width)
    channels = list(model.channels)
    channels[int(key.rsplit(".", 1)[1])] = width
    return replace(model, channels=channels)


def design_points(space: Space, limit: int = DESIGN_LIMIT, seed: int = 0) -> tuple[list[dict[str, Any]], bool]:
    """Values of the sampled model keys (but the widths `fit_design` places), each point once, without the keys
    its conditions leave unsampled: every combination (an int range: each value, or its ends when it has more
    than 32; a float range: its ends) and True when there are at most `limit`; else the all-first and all-last
    combinations and `limit` drawn at random, and False."""
    widths = width_keys(space)
    design = [k for k in space.params if k.startswith("model.") and k not in widths]
    keys = set(design)  # and the keys that decide whether one is sampled, which come before it
    for key in reversed(space.params):
        if key in keys:
            keys |= space.conditions.get(key, {}).keys()
    model = {k: d for k, d in space.params.items() if k in keys}
    options = []
    for dist in model.values():
        if isinstance(dist, CategoricalDistribution):
            options.append([_decode(c) for c in dist.choices])
        elif isinstance(dist, IntDistribution) and (dist.high - dist.low) // dist.step < 32:
            options.append(list(range(dist.low, dist.high + 1, dist.step)))
        else:
            options.append([dist.low, dist.high])
    exact = math.prod(map(len, options)) <= limit
    if exact:
        combos = itertools.product(*options)
    else:
        rng = random.Random(seed)
        combos = [[o[0] for o in options], [o[-1] for o in options]]
        combos += [[rng.choice(o) for o in options] for _ in range(limit)]
    points = {}
    for combo in combos:
        values = {}
        for key, value in zip(model, combo):
            if space.active(key, values):
                values[key] = value
        point = {k: v for k, v in values.items() if k in design}
        points.setdefault(json.dumps(point, sort_keys=True), point)
    return list(points.values()), exact


def trial_designs(space: Space, budget: int | None, max_gflops: float | None, repair: str,
                  points: list[dict[str, Any]]) -> list[tuple[Recipe, Recipe]]:
    """(narrowest, widest) recipes a trial may train at each of `points` (`design_points`), with the budgets
    applied (None: the space's own); points whose design is invalid or over budget are left out."""
    designs, narrowest_values = [], narrowest_widths(space)
    for values in points:
        try:
            recipe = space.recipe({**values, **narrowest_values})
            recipe.budget = budget if budget is not None else recipe.budget
            recipe.max_gflops = max_gflops if max_gflops is not None else recipe.max_gflops
            narrowest, widest = (fit_design(space, recipe.model, recipe.budget, recipe.max_gflops, repair, pick)[0]
                                 for pick in (lambda key, d: d.low, lambda key, d: d.high))
        except SpecError:  # BudgetError included: never trained
            continue
        designs.append((replace(recipe, model=narrowest), replace(recipe, model=widest)))
    return designs


def describe(model: ModelSpec) -> str:
    """A design in the search's words: B, C_1, F, K, P (with its type unless avg, or a 1-pixel pool, the same either
    way) and the block type (and no shortcut where it has none)."""
    pool = "" if model.pool_type == "avg" or model.pool_size == 1 else f" ({model.pool_type})"
    shortcut = "" if model.residual else " no shortcut"
    return (f"B={model.blocks} C_1={model.channels} F={model.kernel_size} K={model.shortcut_kernel_size} "
            f"P={model.pool_size}{pool} {model.block}{shortcut}")


def check_budget(space: Space, budget: int | None, repair: str, max_gflops: float | None = None) -> None:
    """RecipeError, before the first trial, when no design of the space fits the budgets: checked when the space
    has at most DESIGN_LIMIT combinations of model keys (not all tried beyond, so a fitting one might be missed)
    and neither budget is sampled. The narrowest design of a combination has C_1 1 where the repair may fit it."""
    if (budget is None and "budget" in space.params) or (max_gflops is None and "max_gflops" in space.params):
        return  # a sampled budget: each trial checks its own
    points, exact = design_points(space)
    if not exact:
        return
    smallest, narrowest = [], narrowest_widths(space)
    fitted = repair == "fit-channels" and not _widths_chosen(space)
    for values in points:
        try:
            recipe = space.recipe({**values, **narrowest})
            if fitted:
                recipe.model = with_width(recipe.model, 1)
            limit = budget if budget is not None else recipe.budget
            gflops = max_gflops if max_gflops is not None else recipe.max_gflops
            if not budget_excess(recipe.model, limit, gflops):
                return  # one design fits: the rest need not be counted
            smallest.append((recipe.model.count_params(), recipe.model.gflop_per_image(), recipe))
        except SpecError:
            continue  # rejected per trial as an invalid design
    if not smallest:
        return
    params, _, recipe = min(smallest, key=lambda x: x[0])
    given = f"--budget {limit:,}" if budget is not None else f"the space's budget of {limit:,}"
    if params > limit:
        raise RecipeError(f"{given}: no design of --space {space.name} fits; the smallest ({describe(recipe.model)}) "
                          f"has {params:,} parameters: give --budget {params} or more, or a space of smaller designs")
    within = [(g, r) for p, g, r in smallest if p <= limit]
    least, recipe = min(within, key=lambda x: x[0])
    given = f"--max-gflops {gflops:g}" if max_gflops is not None else f"the space's max_gflops of {gflops:g}"
    raise RecipeError(f"{given}: no design of --space {space.name} within {limit:,} parameters fits; the cheapest "
                      f"({describe(recipe.model)}) needs {least:.4f} GFLOP per image: give --max-gflops "
                      f"{math.ceil(least * 1e4) / 1e4:g} or more, or a space of smaller designs")
