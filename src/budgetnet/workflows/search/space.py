"""Space files: a base recipe and, per dotted recipe key, an Optuna distribution or a fixed value, checked against
the recipe before any trial; and the space's smallest design, so that a budget none fits fails at once."""
from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from ...config import DataConfig, Recipe, RecipeError, apply_overrides, load_recipe, read_yaml
from ...design.spec import SpecError

SPACE_KEYS = ("description", "base", "params")
RANGE_KEYS = ("low", "high", "step", "log")


@dataclass
class Space:
    """A search space: the base recipe as a mapping (fixed values applied) and one distribution per sampled key."""

    name: str
    base: dict
    params: dict[str, BaseDistribution]
    description: str = ""

    def recipe(self, values: dict[str, Any]) -> Recipe:
        """The recipe of one point: the base with `values` (dotted key -> value) applied."""
        raw = copy.deepcopy(self.base)
        apply_overrides(raw, [f"{key}={json.dumps(value)}" for key, value in values.items()])
        return load_recipe(raw)

    def suggest(self, trial: optuna.Trial, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Sample every key but `skip` with the trial (non-scalar choices travel as JSON strings, decoded here)."""
        values = {}
        for key, dist in self.params.items():
            if key in skip:
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
    dists, fixed = {}, []
    for key, spec in params.items():
        dist = _distribution(key, spec, path)
        if dist is None:
            fixed.append(f"{key}={json.dumps(spec)}")
        else:
            dists[key] = dist
    space = Space(Path(path).stem, apply_overrides(copy.deepcopy(base), fixed), dists, raw.get("description", ""))
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


def smallest_design(space: Space, budget: int | None, repair: str) -> tuple[int, int, str] | None:
    """(parameters, budget, design) of the space's smallest trainable design, or None when none is valid or the
    space has more than 10,000 combinations of model keys (not all tried, so the smallest might be missed).

    Every choice of every sampled model key is tried (an int range: each value, or its ends when it has more
    than 32; a float range: its ends), with C_1 at its smallest: 1 where the repair may fit it (--repair
    fit-channels and an int C_1), else the range's low end or the smallest choice."""
    model = {k: d for k, d in space.params.items() if k.startswith("model.") and k != "model.channels"}
    options = []
    for dist in model.values():
        if isinstance(dist, CategoricalDistribution):
            options.append([_decode(c) for c in dist.choices])
        elif isinstance(dist, IntDistribution) and (dist.high - dist.low) // dist.step < 32:
            options.append(list(range(dist.low, dist.high + 1, dist.step)))
        else:
            options.append([dist.low, dist.high])
    if math.prod(map(len, options)) > 10_000:
        return None
    channels = space.params.get("model.channels")
    smallest = None
    for combo in itertools.product(*options):
        values = dict(zip(model, combo))
        if isinstance(channels, IntDistribution):
            values["model.channels"] = 1 if repair == "fit-channels" else channels.low
        try:
            recipe = space.recipe(values)
            if channels is None and repair == "fit-channels" and isinstance(recipe.model.channels, int):
                recipe.model = replace(recipe.model, channels=1)
            counts = [recipe.model.count_params()] if not isinstance(channels, CategoricalDistribution) else [
                replace(recipe.model, channels=_decode(c)).count_params() for c in channels.choices]
        except SpecError:
            continue  # rejected per trial as an invalid design
        if isinstance(channels, CategoricalDistribution):
            recipe.model = replace(recipe.model, channels=_decode(channels.choices[counts.index(min(counts))]))
        if smallest is None or min(counts) < smallest[0]:
            d = recipe.model.to_dict()
            design = (f"B={d['blocks']} C_1={d['channels']} F={d['kernel_size']} K={d['shortcut_kernel_size']} "
                      f"P={d['pool_size']} {d['block']}")
            smallest = (min(counts), budget if budget is not None else recipe.budget, design)
    return smallest


def check_budget(space: Space, budget: int | None, repair: str) -> None:
    """RecipeError, before the first trial, when not even the space's smallest design fits the budget."""
    if budget is None and "budget" in space.params:
        return  # a sampled budget: each trial checks its own
    smallest = smallest_design(space, budget, repair)
    if smallest is None or smallest[0] <= smallest[1]:
        return
    params, limit, design = smallest
    given = f"--budget {limit:,}" if budget is not None else f"the space's budget of {limit:,}"
    raise RecipeError(f"{given}: no design of --space {space.name} fits; the smallest ({design}) has "
                      f"{params:,} parameters: give --budget {params} or more, or a space of smaller designs")
