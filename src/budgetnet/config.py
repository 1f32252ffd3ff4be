"""Recipes: YAML files resolved into a typed Recipe, with dotted `--set` overrides and unknown-key suggestions.

The recipe's schema: every key, its type and its default is in the dataclasses below (the `model` section's in
design.spec.ModelSpec, the `data` section's in data.schema.DataConfig, the augment list's policies in
data.policies); a choice field is typed `Literal[...]`, which lists its values. Each section's validate() checks its
values (its choices through choices.check_choices) and Recipe.validate() runs them all, the augment list's check
included, so that the builders (optimizer, schedule, averages, autocast, compile, evaluation, augmentation) trust a
validated recipe. What depends on the machine (the device, the number of processes) is checked where it is known.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .choices import check_choices, check_ranges, check_rule as _check
from .data.policies import Crop, Flip, PolicyConfig, check_augment, parse_policy
from .data.schema import DataConfig, Dataset  # noqa: F401 (re-exported: the recipe's data section)
from .design.spec import ModelSpec
from .errors import RecipeError, UsageError, did_you_mean, shown

OptimizerName = Literal["sgd", "adam", "adamw", "radam", "muon"]
Units = Literal["torch", "per_1024"]
ScheduleName = Literal["cosine", "warm_restarts", "step", "triangle", "constant", "onecycle"]
SCHEDULE_ALIASES = {"onecycle": "triangle"}  # the triangle's former name (it is not torch's OneCycleLR), still read
Precision = Literal["auto", "fp32", "bf16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
TTAMode = Literal["none", "flip", "flip_translate"]


# The range (inclusive) of every integer recipe value, checked by its section's validate() before anything is
# written (epochs, which may be a fraction, in Recipe.validate); the model's are design.spec.MODEL_RANGES, the data's sizes are checked against the data set's
# (DataConfig.validate). The seed's bound keeps every seed the training loop derives from it (seed * 100,003 +
# epoch * 1,009 + rank: under 2**49) within what torch's generators (below 2**64) and numpy's (0 or more) take.
MAX_EPOCHS = 100_000
MAX_SEED = 2**32 - 1
MAX_BUDGET = 10**10                   # trainable parameters ("10G")
INT_RANGES = {
    "batch_size": (1, 2**20),
    "eval_batch_size": (1, 2**20),
    "seed": (0, MAX_SEED),
    "budget": (1, MAX_BUDGET),
    "eval_every": (1, MAX_EPOCHS),
    "test_every": (0, MAX_EPOCHS),    # 0: off
    "checkpoint_every": (0, MAX_EPOCHS),  # 0: after the last epoch only
    "optimizer.muon_ns_steps": (1, 100),
    "optimizer.muon_normalize_every": (1, 10**6),
    "schedule.T_mult": (1, 1_000),
    "ema.every": (1, 10**6),
    "lookahead.k": (1, 10**6),
}


@dataclass
class OptimizerConfig:
    name: OptimizerName = "sgd"       # muon (airbench94_muon): its Muon on the conv filters, SGD with the
                                      # settings below on everything else
    units: Units = "torch"            # per_1024: lr and weight decays per 1,024 examples of a summed loss,
                                      # airbench's (sgd/muon; torch lr = lr*batch/(1024(1+1/(1-momentum))), each
                                      # group's wd = its value/(lr*its lr scale)); airbench94: lr 11.5, wd 0.0153
    lr: float = 0.1
    momentum: float = 0.9             # sgd
    nesterov: bool = False            # sgd
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw, radam
    decoupled_weight_decay: bool = False  # sgd: shrink weights by lr*weight_decay each step instead of adding L2 to
                                          # the gradient (AdamW-style; adamw is decoupled already)
    norm_lr_scale: float = 1.0        # learning-rate multiplier for BatchNorm weights/biases and layer biases
                                      # (airbench94's bias_scaler 64 with units per_1024; not the whitening bias)
    norm_weight_decay: float | None = None  # weight decay of those parameters (None: weight_decay)
    whiten_bias_as_norm: bool = False # the whitening bias takes those parameters' lr scale and weight decay, its lr
                                      # falling linearly to 0 over model.whiten_bias_epochs (airbench94_muon);
                                      # false: the weights' lr under the schedule (airbench94)
    muon_lr: float = 0.24             # muon: learning rate of the conv filters (airbench94_muon)
    muon_momentum: float = 0.6        # muon
    muon_nesterov: bool = True        # muon
    muon_ns_steps: int = 3            # muon: Newton-Schulz iterations (airbench 3, torch's default 5)
    muon_weight_decay: float = 0.0    # muon: decoupled, on the filters (airbench none)
    muon_normalize: bool = True       # muon: rescale each filter bank to norm sqrt(C_out) before each step (airbench)
    muon_normalize_every: int = 1     # muon: rescale only every k-th step (hiverge's speedrun; airbench: 1)
    muon_batched: bool = False        # muon: orthogonalise filter banks of one shape in one batched matmul

    def validate(self) -> None:
        """Raise RecipeError naming the first value outside its range or a combination that cannot run."""
        check_choices(self, "optimizer.", RecipeError)
        check_ranges(self, INT_RANGES, "optimizer.", RecipeError)
        _check(self.lr > 0, "optimizer.lr", self.lr, "must be > 0")
        _check(0 <= self.momentum < 1, "optimizer.momentum", self.momentum, "must be in [0, 1)")
        _check(not self.nesterov or self.momentum > 0, "optimizer.momentum", self.momentum,
               "must be > 0 with optimizer.nesterov=true")
        _check(self.weight_decay >= 0, "optimizer.weight_decay", self.weight_decay, "must be >= 0")
        _check(len(self.betas) == 2, "optimizer.betas", self.betas, "must be two numbers, e.g. [0.9, 0.999]")
        for i, beta in enumerate(self.betas):
            _check(0 <= beta < 1, f"optimizer.betas.{i}", beta, "must be in [0, 1)")
        _check(self.norm_lr_scale >= 0, "optimizer.norm_lr_scale", self.norm_lr_scale, "must be >= 0")
        _check(self.norm_weight_decay is None or self.norm_weight_decay >= 0, "optimizer.norm_weight_decay",
               self.norm_weight_decay, "must be >= 0 (or null: optimizer.weight_decay)")
        if self.units == "per_1024" and (self.name not in ("sgd", "muon") or self.decoupled_weight_decay):
            raise RecipeError("optimizer.units=per_1024 is airbench's convention for SGD with coupled weight decay: "
                              "use optimizer.name=sgd (or muon), decoupled_weight_decay=false and momentum in [0, 1)")
        if self.decoupled_weight_decay and self.name not in ("sgd", "muon"):
            raise RecipeError("optimizer.decoupled_weight_decay is for sgd (and muon's SGD part); adamw decouples "
                              "weight decay already")
        if self.name == "muon" and (self.muon_lr <= 0 or not 0 <= self.muon_momentum < 1):
            raise RecipeError(f"optimizer.muon_lr={self.muon_lr} must be > 0 and muon_momentum={self.muon_momentum} "
                              "in [0, 1)")


@dataclass
class EmaConfig:
    """An exponential moving average of the weights and BN buffers, used for evaluation and checkpoints."""
    enabled: bool = False
    decay: float = 0.99               # per update: ema = decay * ema + (1 - decay) * weights
    every: int = 5                    # optimizer steps between updates (each update costs one tiny host sync)

    def validate(self) -> None:
        """Raise RecipeError naming the first value outside its range."""
        check_ranges(self, INT_RANGES, "ema.", RecipeError)
        _check(0 < self.decay < 1, "ema.decay", self.decay, "must be in (0, 1)")


@dataclass
class LookaheadConfig:
    """Lookahead (Zhang et al., 2019): every k steps the slow weights move alpha of the way to the fast weights,
    and the fast weights restart from them; BN buffers are averaged alike. Training ends on the slow weights."""
    enabled: bool = False
    k: int = 5
    alpha: float = 0.5
    anneal: bool = False              # alpha falls from 1 (no averaging) to `alpha` as (t/T)^3 over the run (airbench)

    def validate(self) -> None:
        """Raise RecipeError naming the first value outside its range."""
        check_ranges(self, INT_RANGES, "lookahead.", RecipeError)
        _check(0 < self.alpha <= 1, "lookahead.alpha", self.alpha, "must be in (0, 1]")


@dataclass
class ScheduleConfig:
    name: ScheduleName = "cosine"     # onecycle: triangle's former name, still read (SCHEDULE_ALIASES)
    eta_min: float = 0.0              # cosine, warm_restarts: lowest learning rate
    T_0: float = 10.0                 # warm_restarts: epochs of the first cycle
    T_mult: int = 1                   # warm_restarts: cycle length factor after each restart
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of the run, in (0, 1)
    gamma: float = 0.1                # step: factor at each milestone
    pct_start: float = 0.25           # triangle: fraction of the run spent rising
    start_factor: float = 0.04        # triangle: lr at the start, times the peak (airbench94: 0.2)
    end_factor: float = 0.0           # triangle: lr at the end, times the peak (airbench94: 0.07)
    warmup_epochs: float = 0.0        # the schedule's lr times t / warmup_epochs until then (a ramp from 0 into it)
    per_step: bool = True             # update every step (True) or once per epoch

    def validate(self) -> None:
        """Raise RecipeError naming the first value outside its range."""
        check_choices(self, "schedule.", RecipeError)
        check_ranges(self, INT_RANGES, "schedule.", RecipeError)
        _check(self.eta_min >= 0, "schedule.eta_min", self.eta_min, "must be >= 0")
        _check(self.T_0 > 0, "schedule.T_0", self.T_0, "must be > 0 (epochs of the first cycle)")
        for i, m in enumerate(self.milestones):
            _check(0 < m < 1, f"schedule.milestones.{i}", m, "must be a fraction of the run in (0, 1): for epoch "
                   "60 of 200 write 0.3")
        _check(self.gamma > 0, "schedule.gamma", self.gamma, "must be > 0")
        _check(0 < self.pct_start < 1, "schedule.pct_start", self.pct_start, "must be in (0, 1)")
        for key in ("start_factor", "end_factor"):
            _check(0 <= getattr(self, key) <= 1, f"schedule.{key}", getattr(self, key),
                   "must be in [0, 1] (a fraction of the peak learning rate)")
        _check(self.warmup_epochs >= 0, "schedule.warmup_epochs", self.warmup_epochs, "must be >= 0")


@dataclass
class Recipe:
    """A complete training recipe; `to_dict()` is what a run directory records."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: list[PolicyConfig] = field(default_factory=lambda: [Crop(padding=4), Flip()])  # data.policies
    description: str = ""
    epochs: int | float = 30          # a fraction (9.9) stops the last epoch, epoch ceil(epochs), part-way:
                                      # training.loop takes data.cifar.run_steps steps in all
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    budget: int = 5_000_000           # trainable-parameter budget, enforced before training
    max_gflops: float | None = None   # compute budget: forward+backward GFLOP per image, enforced before training
    label_smoothing: float = 0.0
    ema: EmaConfig = field(default_factory=EmaConfig)
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)
    tta: TTAMode = "none"             # test-time augmentation at evaluation (training.scoring.tta_views)
    tta_fraction: float | None = None # the tta views only for this fraction of the evaluated images, those whose
                                      # plain prediction is least confident; the rest keep it (hiverge: 0.25).
                                      # None: the views for every image (training.scoring.predict_logits)
    grad_clip: float | None = None    # max gradient norm
    eval_every: int = 1               # evaluate every k epochs (and always after the last)
    test_every: int = 0               # also the plain test accuracy (no TTA) every k epochs and after the last, for
                                      # the best seen (the study's figure: every 10 epochs, chosen on test); 0: off
    checkpoint_every: int | None = None  # checkpoint every k epochs and after the last (0: the last only; None: auto)
    device: str = "auto"              # auto | cpu | cuda | cuda:1 ...
    precision: Precision = "auto"     # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = True
    compile: bool = False             # torch.compile the model (the first steps take the compile time)
    compile_mode: CompileMode = "default"  # torch.compile's mode
    sync_bn: bool = False             # DDP: SyncBatchNorm, batch statistics over all ranks (else each rank's own)

    @property
    def last_epoch(self) -> int:
        """The number of the run's last epoch, ceil(epochs): partial in a fractional run, and like the last of a
        whole-number run evaluated, tested and checkpointed."""
        return math.ceil(self.epochs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise a UsageError (RecipeError; SpecError for the model) naming the first value that cannot run: NaN or
        infinity anywhere, then the run's own ranges and choices, then each section's, then the augment list."""
        _check_finite(self.to_dict())
        check_choices(self, "", RecipeError)
        check_ranges(self, INT_RANGES, "", RecipeError)
        _check(self.label_smoothing >= 0 and self.label_smoothing < 1, "label_smoothing", self.label_smoothing,
               "must be in [0, 1)")
        _check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip,
               "must be > 0 (or null for no clipping)")
        _check(self.max_gflops is None or self.max_gflops > 0, "max_gflops", self.max_gflops,
               "must be a positive forward+backward GFLOP per image, e.g. 0.71 (or null for no compute budget)")
        _check(self.tta_fraction is None or 0 < self.tta_fraction <= 1, "tta_fraction", self.tta_fraction,
               "must be in (0, 1] (the share of the images that get the TTA views, e.g. 0.25), or null for all")
        _check(self.tta_fraction is None or self.tta != "none", "tta_fraction", self.tta_fraction,
               "needs test-time augmentation: set tta (flip or flip_translate), or tta_fraction=null")
        _check(0 < self.epochs <= MAX_EPOCHS, "epochs", self.epochs,
               f"must be > 0 and at most {MAX_EPOCHS:,} (whole or fractional, e.g. 30 or 9.9)")
        self.model.validate()
        self.data.validate(self.model)
        for section in (self.optimizer, self.schedule, self.ema, self.lookahead):
            section.validate()
        _check(not self.optimizer.whiten_bias_as_norm or self.model.whiten_bias_epochs > 0,
               "optimizer.whiten_bias_as_norm", True, "needs a whitening bias: set model.whiten_bias_epochs (e.g. 3)")
        check_augment(self.augment)


def _check_finite(value: Any, key: str = "") -> None:
    """Raise RecipeError naming the first NaN or infinite number in a recipe mapping (lists index by position)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{key}={value} is not a finite number: give a number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        _check_finite(v, f"{key}.{k}" if key else str(k))


# ---- loading ----------------------------------------------------------------------------------

# the folders of the YAML files that ship with budgetnet, by kind (the study's experiments live with the study)
SHIPPED = {"recipes": "budgetnet.recipes", "spaces": "budgetnet.spaces", "experiments": "budgetnet.study.experiments",
           "facts": "budgetnet.study"}


def recipe_names() -> list[str]:
    """Names of the recipes that ship with budgetnet."""
    return sorted(p.name[:-5] for p in resources.files(SHIPPED["recipes"]).iterdir() if p.name.endswith(".yaml"))


def read_yaml(name_or_path: str | Path, kind: str = "recipes") -> tuple[dict, Path | None]:
    """A YAML mapping from a file path or the name of a file shipped in SHIPPED[kind]."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = resources.files(SHIPPED[kind]) / f"{name_or_path}.yaml"
        if not shipped.is_file():
            names = sorted(p.name[:-5] for p in resources.files(SHIPPED[kind]).iterdir()
                           if p.name.endswith(".yaml"))
            raise RecipeError(f"{kind[:-1]} {str(name_or_path)!r} is neither a file nor a shipped name"
                              f"{did_you_mean(str(name_or_path), names)}; shipped: {', '.join(names)}")
        path = Path(str(shipped))
    if path.stat().st_size > MAX_YAML_BYTES:
        raise RecipeError(f"{path} has {path.stat().st_size:,} bytes, more than a {kind[:-1]} file's "
                          f"{MAX_YAML_BYTES:,}: is it the right file?")
    raw = parse_yaml(path.read_text(), str(path))
    if raw is None or raw == {}:
        raise RecipeError(f"{path} is empty: a {kind[:-1]} file must set something; copy a shipped "
                          f"{kind[:-1]} and change what differs")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path} must hold a mapping of keys, not {type(raw).__name__}")
    return raw, path


MAX_YAML_BYTES = 1_000_000  # the most a YAML file (or a --set value) may hold
MAX_YAML_VALUES = 100_000   # the most values (keys, scalars, lists, mappings) once its aliases (*name) are expanded
MAX_YAML_DEPTH = 50         # the most levels of nested lists and mappings


def parse_yaml(text: str, source: str) -> Any:
    """The value of YAML `text` (YAML's own types only), or a RecipeError naming `source` (a file, a --set) and the
    line for text that does not parse, a tag that is not YAML's (!!python/...), or one bigger than the limits above
    (an alias bomb: a few lines whose aliases expand to billions of values)."""
    if len(text) > MAX_YAML_BYTES:
        raise RecipeError(f"{source} has {len(text):,} characters, more than the {MAX_YAML_BYTES:,} a YAML value may")
    try:
        _check_yaml_size(yaml.compose(text, Loader=yaml.SafeLoader), source, 0, {})
        return yaml.safe_load(text)
    except RecipeError:  # the size check's own
        raise
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an integer of more than Python's 4,300 digits
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise RecipeError(f"{source} is not valid YAML: {shown(problem)}{where}; fix that line") from None
    except RecursionError:  # the composer recurses once per level, past Python's limit before our depth check
        raise RecipeError(f"{source} nests lists or mappings more than {MAX_YAML_DEPTH} levels deep") from None


def _check_yaml_size(node: yaml.Node | None, source: str, depth: int, sizes: dict[int, int]) -> int:
    """The number of values below and including `node` with aliases expanded (`sizes` remembers each shared node's,
    so that a bomb is counted without expanding it); RecipeError past MAX_YAML_VALUES or MAX_YAML_DEPTH (which
    also stops an alias that contains itself)."""
    if node is None or id(node) in sizes:
        return sizes.get(id(node), 0)
    if depth > MAX_YAML_DEPTH:
        raise RecipeError(f"{source} nests lists or mappings more than {MAX_YAML_DEPTH} levels deep (or an alias "
                          "contains itself)")
    children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else
                node.value if isinstance(node, yaml.SequenceNode) else [])
    size = 1 + sum(_check_yaml_size(c, source, depth + 1, sizes) for c in children)
    if size > MAX_YAML_VALUES:
        raise RecipeError(f"{source} holds more than {MAX_YAML_VALUES:,} values once its aliases (*name) are "
                          "expanded: write the values out, or use fewer aliases")
    sizes[id(node)] = size
    return size


def load_recipe(name_or_path: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Resolve a recipe (shipped name, YAML file or mapping) plus `key=value` overrides into a checked Recipe."""
    raw = copy.deepcopy(name_or_path) if isinstance(name_or_path, dict) else read_yaml(name_or_path)[0]
    apply_overrides(raw, overrides)
    if "budget" in raw:
        raw["budget"] = parse_count(raw["budget"], "budget=")
    recipe = from_dict(Recipe, raw)
    recipe.model.validate()
    return recipe


def note_overrides(recipe: Recipe, overrides: list[str] | tuple[str, ...]) -> Recipe:
    """`recipe` with its description ending in the `--set` changes it was loaded with (unless one of them sets the
    description), so that a run's records never describe the recipe it changed as the one that ran."""
    if overrides and not any(item.partition("=")[0] == "description" for item in overrides):
        recipe.description = f"{recipe.description.rstrip()} Changed with --set: {'; '.join(overrides)}.".lstrip()
    return recipe


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply `dotted.key=value` strings (values in YAML syntax; digits index lists) to a nested mapping."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set {shown(item)}: expected dotted.key=value, e.g. optimizer.lr=0.05")
        value = parse_yaml(text, f"--set {shown(item)}") if text.strip() else None
        node: Any = raw
        *parents, last = key.split(".")
        for i, part in enumerate(parents):
            if isinstance(node, list):
                node = node[_index(node, part, key)]
            else:
                node = node.setdefault(part, {})
                if node is None:
                    raise RecipeError(f"--set {key}: {part} is empty in the recipe")
            if not isinstance(node, (dict, list)):
                section = ".".join(parents[:i + 1])
                raise RecipeError(f"--set {key}: {section}={shown(node)} is a value, not a section with keys: set "
                                  f"it whole, e.g. --set {section}=VALUE")
        if isinstance(node, list):
            node[_index(node, last, key)] = value
        else:
            node[last] = value
    return raw


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(f"--set {key}: {shown(part)} is not an index of a list of {len(node)} items")
    return int(part)


def parse_count(text: str | int, key: str = "") -> int:
    """Parse a parameter count such as 5000000, '5M', '4.5M' or '500k' (1 to MAX_BUDGET); a RecipeError's message
    starts with `key` (e.g. "budget=") and the text."""
    s = str(text).strip().lower().replace(",", "").replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(s[-1:], 1)
    try:
        count = text if isinstance(text, int) else int(round(float(s[:-1] if scale > 1 else s) * scale))
    except (ValueError, OverflowError):  # not a number, NaN, or infinite
        count = 0
    if not 1 <= count <= MAX_BUDGET:
        raise RecipeError(f"{key}{shown(text)} is not a parameter count: use a positive number up to "
                          f"{MAX_BUDGET:,}, e.g. 5000000, 5M or 500k")
    return count


def parse_gflops(text: str | float) -> float:
    """Parse a compute budget in forward+backward GFLOP per image, such as 0.71."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise RecipeError(f"{shown(text)} is not a GFLOP count: use a positive number of forward+backward GFLOP per "
                          "image, e.g. 0.71")
    return value


# ---- typed conversion ---------------------------------------------------------------------------

def from_dict(cls: type, raw: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking every key and value type."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{prefix.rstrip('.') or 'recipe'} must be a mapping, got {shown(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise RecipeError(f"unknown recipe key {shown(f'{prefix}{key}')}{did_you_mean(key, list(fields), prefix)}; "
                              f"valid keys here: {', '.join(fields)}")
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint, converting int->float and numeric strings such as '5e-4'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except RecipeError as e:
                errors.append(str(e))
        raise RecipeError(errors[-1])
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key} must be a list, got {shown(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]") if args else v for i, v in enumerate(value)]
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if hint is PolicyConfig:
        return parse_policy(value)  # the policy's own names and keys; its values: Recipe.validate
    if origin is Literal and isinstance(value, str):
        return value  # which of the choices: the section's validate() checks
    if hint in (int, float, str, bool) and (type(value) is hint):
        return value
    kind = f"one of {', '.join(args)}" if origin is Literal else getattr(hint, "__name__", hint)
    raise RecipeError(f"{key} must be {kind}, got {shown(value)}")


def diff_recipes(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} for every value that differs between two recipe mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = {}
        for k in old.keys() | new.keys():
            diffs.update(diff_recipes(old.get(k), new.get(k), f"{prefix}{k}."))
        return diffs
    return {} if old == new else {prefix.rstrip("."): (old, new)}

