"""Recipes: shipped files load, dotted overrides, typed values, and unknown keys with suggestions."""
import dataclasses
import math
import typing

import pytest

from budgetnet.config import Recipe, RecipeError, apply_overrides, load_recipe, parse_count, recipe_names
from budgetnet.data.policies import AugMix, Crop, Flip
from budgetnet.errors import UsageError
from budgetnet.training.optim import lr_at_step


def test_shipped_recipes_load_and_fit_the_budget():
    assert {"seed", "demo"} <= set(recipe_names())
    for name in recipe_names():
        recipe = load_recipe(name)
        assert recipe.model.count_params() <= recipe.budget, name


def test_seed_recipe_is_the_study():
    """Every field against the study's code (CCGV2/DLProject1 model7/model7.py), the schedule by its equation."""
    r = load_recipe("seed")
    m = r.model
    assert r.model.count_params() == 4_815_940
    assert (m.blocks, m.channels, m.kernel_size, m.shortcut_kernel_size, m.pool_size, m.block, m.num_classes) == \
        ([2, 2, 2, 2], 42, 3, 1, 4, "basic", 10)
    assert (r.batch_size, r.epochs, r.label_smoothing, r.grad_clip) == (128, 1200, 0.0, None)
    o = r.optimizer
    assert (o.name, o.lr, o.momentum, o.nesterov, o.weight_decay, o.decoupled_weight_decay) == \
        ("sgd", 0.1, 0.9, True, 5e-4, False)
    assert (o.norm_lr_scale, o.norm_weight_decay) == (1.0, None)
    assert (r.schedule.name, r.schedule.per_step, r.schedule.warmup_epochs) == ("cosine", True, 0.0)
    assert not r.ema.enabled and not r.lookahead.enabled and r.tta == "none"
    assert r.augment == [Crop(padding=4), Flip(p=0.5), AugMix(severity=3, mixture_width=3, chain_depth=-1, alpha=1.0,
                                                            all_ops=True, jsd=True, jsd_lambda=12.0)]
    # model7.py: LambdaLR(lr_min + (lr_max - lr_min) * 0.5 * (1 + cos(step / total_steps * pi))), 0.1 -> 1e-6
    total = 1200 * 390
    for step in (0, 1, 1000, total // 3, total // 2, total - 1, total):
        study = 1e-6 + (0.1 - 1e-6) * 0.5 * (1 + math.cos(step / total * math.pi))
        assert lr_at_step(r.schedule, r.optimizer.lr, step, total, 390) == pytest.approx(study, rel=1e-9, abs=1e-15)


def test_overrides_are_yaml_typed_and_dotted():
    r = load_recipe("seed", ["optimizer.lr=0.05", "model.blocks=[1, 1, 1]", "model.pool_size=8",
                             "optimizer.weight_decay=5e-4", "grad_clip=1", "data.train_size=null",
                             "augment=[{name: flip, p: 0.3}]", "augment.0.p=0.25", "budget=4.5M"])
    assert r.optimizer.lr == 0.05 and r.model.blocks == [1, 1, 1]
    assert r.optimizer.weight_decay == 5e-4 and isinstance(r.optimizer.weight_decay, float)
    assert r.grad_clip == 1.0 and isinstance(r.grad_clip, float)
    assert r.augment == [Flip(p=0.25)]
    assert r.budget == 4_500_000


def test_channels_accept_a_scalar_or_a_list():
    assert load_recipe("seed", ["model.channels=[16, 32, 64, 128]"]).model.stage_channels() == [16, 32, 64, 128]


@pytest.mark.parametrize("override, message", [
    ("optimizer.lrr=0.1", "unknown recipe key 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
    ("epochz=3", "did you mean 'epochs'?"),
    ("model.chanels=32", "did you mean 'model.channels'?"),
    ("epochs=many", "epochs must be float"),
    ("model.blocks=2", "model.blocks must be a list"),
    ("optimizer.nesterov=maybe", "optimizer.nesterov must be bool"),
    ("optimizer", "expected dotted.key=value"),
    ("augment.5.p=1", "is not an index of a list of 3 items"),
    ("model.kernel_size=4", "even size"),
])
def test_bad_recipes_fail_with_a_clear_message(override, message):
    with pytest.raises(ValueError) as err:
        load_recipe("seed", [override])
    assert message in str(err.value)


def _choice_fields(cls: type, prefix: str = "") -> list[tuple[str, tuple]]:
    """(dotted key, allowed values) of every Literal-typed field of a recipe dataclass and its sections."""
    hints, fields = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            fields += _choice_fields(hint, f"{prefix}{f.name}.")
        elif typing.get_origin(hint) is typing.Literal:
            fields.append((f"{prefix}{f.name}", typing.get_args(hint)))
    return fields


CHOICE_FIELDS = _choice_fields(Recipe)


def test_every_choice_field_is_a_literal():
    assert {key for key, _ in CHOICE_FIELDS} == {
        "data.dataset", "optimizer.name", "optimizer.units", "schedule.name", "tta", "precision", "compile_mode",
        "model.block", "model.stem", "model.whiten_padding", "model.downsample", "model.pool_type",
        "model.activation"}
    assert dict(CHOICE_FIELDS)["schedule.name"][-1] == "onecycle"  # the triangle's former name is still read


@pytest.mark.parametrize("key, allowed", CHOICE_FIELDS, ids=[key for key, _ in CHOICE_FIELDS])
def test_a_value_outside_its_literal_is_refused_with_the_literals_values(key, allowed):
    with pytest.raises(UsageError) as err:
        load_recipe("seed", [f"{key}=bogus"]).validate()
    assert str(err.value) == f"{key}='bogus' is unknown: use one of {', '.join(allowed)}"
    with pytest.raises(RecipeError, match=f"{key} must be one of {', '.join(allowed)}, got 3"):
        load_recipe("seed", [f"{key}=3"])


def test_recipe_validate_checks_the_augment_list():
    with pytest.raises(UsageError, match="unknown augment policy 'flipp'"):
        load_recipe("seed", ["augment=[{name: flipp}]"]).validate()


def test_unknown_recipe_name_suggests_the_nearest():
    with pytest.raises(RecipeError, match="did you mean 'seed'"):
        load_recipe("sed")


def test_recipe_from_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {blocks: [1, 1], channels: 8, pool_size: 16}\nepochs: 3\n")
    r = load_recipe(str(path))
    assert r.epochs == 3 and r.model.blocks == [1, 1] and r.batch_size == 128


def test_apply_overrides_creates_nested_keys():
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize("text, value", [("5M", 5_000_000), ("4.5m", 4_500_000), ("500k", 500_000),
                                         ("5,000,000", 5_000_000), (123, 123)])
def test_parse_count(text, value):
    assert parse_count(text) == value


def test_parse_count_rejects_garbage():
    with pytest.raises(RecipeError, match="not a parameter count"):
        parse_count("lots")


def test_checking_a_recipe_imports_neither_torch_nor_the_augment_ops():
    """Loading and checking every shipped recipe, and one with each auto-augment policy, leaves torch, torchvision
    and the augmentation ops unimported: each section checks its own typed record (data.policies for the augment
    list), with no tensor library."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import budgetnet

    script = ("import sys; import budgetnet.config as c\n"
              "for name in c.recipe_names(): c.load_recipe(name).validate()\n"
              "for policy in ('autoaugment', 'randaugment', 'trivialaugment', 'augmix'):\n"
              "    c.load_recipe('small', [f'augment=[{{name: {policy}}}]']).validate()\n"
              "loaded = [m for m in ('torch', 'torchvision', 'budgetnet.data.augment') if m in sys.modules]\n"
              "assert not loaded, f'imported {loaded}'\n")
    src = str(Path(budgetnet.__file__).parents[1])
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": src}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
