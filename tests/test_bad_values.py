"""Values and options that once reached Python, numpy or torch: each class is refused in one line naming the key or
option, before anything is written (issue 28, items 3 and 6)."""
import dataclasses
import typing

import numpy as np
import pytest
import torch

from budgetnet.cli import main
from budgetnet.config import MAX_EPOCHS, MAX_SEED, Recipe, RecipeError, load_recipe
from budgetnet.data.policies import POLICIES, parse_policy
from budgetnet.deploy.predict import read_image
from budgetnet.errors import UsageError
from budgetnet.training import checkpoint
from budgetnet.training.loop import AUGMENT_EPOCH_STRIDE, AUGMENT_SEED_STRIDE, ORDER_SEED_STRIDE, train
from budgetnet.workflows.experiment.runner import check_jobs
from conftest import CLASSES, TINY_MODEL, tiny_recipe

HUGE = 10**20  # past int64: torch's "Overflow when unpacking long long"


def one_line_error(capsys, argv: list[str], command: str) -> str:
    """Run the CLI, expect exit 2 and one line "budgetnet COMMAND: error: ...", and return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"budgetnet {command}: error: "), err
    return err


# ---- item 3: every integer recipe value has a range ---------------------------------------------------

def int_keys(cls: type = Recipe, prefix: str = "") -> list[str]:
    """The dotted key of every integer field of the recipe (int, int | None, list[int], int | list[int])."""
    hints, keys = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += int_keys(hint, f"{prefix}{f.name}.")
        elif int in (hint, *typing.get_args(hint)) or list[int] in (hint, *typing.get_args(hint)):
            keys.append(f"{prefix}{f.name}")
    return keys


def test_the_recipe_has_integer_fields_in_every_section():
    keys = int_keys()
    assert {"seed", "epochs", "budget", "model.blocks", "model.channels", "data.train_size", "ema.every",
            "lookahead.k", "schedule.T_mult", "optimizer.muon_ns_steps"} <= set(keys)


@pytest.mark.parametrize("value", [HUGE, -HUGE])
@pytest.mark.parametrize("key", int_keys())
def test_every_integer_recipe_value_has_a_range_named_by_its_key(key, value):
    text = f"[{value}]" if key == "model.blocks" else str(value)
    with pytest.raises(UsageError, match=key.replace(".", r"\.")):
        load_recipe("demo", [f"{key}={text}"]).validate()


def test_every_seed_the_loop_derives_from_the_largest_seed_is_valid_for_torch_and_numpy():
    rank = 1023
    for derived in (MAX_SEED * AUGMENT_SEED_STRIDE + MAX_EPOCHS * AUGMENT_EPOCH_STRIDE + rank,
                    MAX_SEED * ORDER_SEED_STRIDE + MAX_EPOCHS):
        torch.Generator().manual_seed(derived)
        np.random.default_rng(derived)
    load_recipe("demo", [f"seed={MAX_SEED}", f"epochs={MAX_EPOCHS}"]).validate()


@pytest.mark.parametrize("setting, message", [
    (f"seed={HUGE}", f"seed={HUGE} must be at most 4,294,967,295"),
    ("seed=-1", "seed=-1 must be 0 or more"),
    (f"batch_size={2**40}", f"batch_size={2**40} must be at most"),
    (f"augment=[{{name: crop, padding: {HUGE}}}]", "augment policy 'crop': padding must be an int in [0, 64]"),
    (f"augment=[{{name: cutout, size: {HUGE}}}]", "augment policy 'cutout': size must be an int in [0, 64]"),
    ("model.image_size=64", "model.image_size=64 but cifar10 images are 32x32: set model.image_size=32"),
    ("model.in_channels=1", "model.in_channels=1 but cifar10 images have 3 channels: set model.in_channels=3"),
])
def test_train_refuses_a_value_out_of_range_before_its_run_directory_exists(tiny_data, tmp_path, setting, message):
    with pytest.raises(UsageError) as refused:
        train(tiny_recipe(setting), tmp_path / "r", data=tiny_data, progress=False)
    assert message in str(refused.value)
    assert not (tmp_path / "r").exists()


def test_a_train_with_the_largest_seed_runs(tiny_data, tmp_path):
    summary = train(tiny_recipe(f"seed={MAX_SEED}", "epochs=1"), tmp_path / "r", data=tiny_data, progress=False)
    assert summary.epochs_done == 1


def int_parameters() -> list[tuple[str, str]]:
    """(policy, parameter) for every integer parameter of every augment policy."""
    return [(name, f.name) for name, cls in sorted(POLICIES.items()) for f in dataclasses.fields(cls)
            if f.type in ("int", int)]


def test_augment_policies_have_integer_parameters():
    assert {("crop", "padding"), ("cutout", "size"), ("augmix", "chain_depth")} <= set(int_parameters())


@pytest.mark.parametrize("value", [HUGE, -HUGE])
@pytest.mark.parametrize("policy, key", int_parameters())
def test_every_integer_augment_parameter_has_a_range(policy, key, value):
    with pytest.raises(UsageError, match=f"augment policy '{policy}': {key} must be an int in"):
        parse_policy({"name": policy, key: value}).validate()


# ---- item 6: YAML, --set and --budget ---------------------------------------------------------------

def alias_bomb(levels: int, key: str = "augment") -> str:
    """YAML of `levels` lists of 9 aliases of the previous: 9**levels values once expanded, in a few lines."""
    anchors = ["&a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]"
                                                    for i in range(1, levels + 1)]
    return f"{key}: {{{', '.join(f'x{i}: {a}' for i, a in enumerate(anchors))}}}\n"


BAD_YAML = [  # (YAML text of a recipe file, what the one line says)
    ("epochs: [1,\n", "is not valid YAML"),
    ("epochs: !!python/object:os.system 1\n", "is not valid YAML: \"could not determine a constructor for the tag"),
    ("epochs: !custom 1\n", "is not valid YAML"),
    ("epochs: 1\n\t- 2\n", "is not valid YAML"),
    (alias_bomb(12), "more than 100,000 values once its aliases (*name) are expanded"),
    ("augment: &a [*a]\n", "an alias contains itself"),
    ("augment: " + "[" * 5000 + "]" * 5000 + "\n", "more than 50 levels deep"),
]


@pytest.mark.parametrize("text, message", BAD_YAML, ids=range(len(BAD_YAML)))
def test_bad_yaml_in_a_file_or_a_set_is_one_line(capsys, tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    assert message in one_line_error(capsys, ["params", "--recipe", str(tmp_path / "bad.yaml")], "params")
    key, value = text.split(":", 1)
    assert message in one_line_error(capsys, ["params", "--set", f"{key}={value}"], "params")


def test_a_yaml_file_over_the_size_limit_is_refused(capsys, tmp_path):
    (tmp_path / "big.yaml").write_text("description: " + "x" * 1_000_001 + "\n")
    assert "more than a recipe file's 1,000,000" in one_line_error(
        capsys, ["params", "--recipe", str(tmp_path / "big.yaml")], "params")


@pytest.mark.parametrize("text", [alias_bomb(4, "description"), f"description: {{x: {'y' * 100_000}}}\n",
                                  f"? {'k' * 100_000}\n: 1\n", f"model: {{channels: {'9' * 100_000}}}\n"])
def test_an_error_echoes_a_short_value(capsys, tmp_path, text):
    (tmp_path / "r.yaml").write_text(text)
    assert len(one_line_error(capsys, ["params", "--recipe", str(tmp_path / "r.yaml")], "params")) < 500


@pytest.mark.parametrize("setting, section", [("epochs.x=1", "epochs=4"), ("optimizer.lr.z=1", "optimizer.lr=0.2"),
                                              ("augment.0.name.y=2", "augment.0.name='crop'")])
def test_set_below_a_value_names_the_value(setting, section):
    with pytest.raises(RecipeError, match=f"--set {setting.split('=')[0]}: {section} is a value, not a section"):
        load_recipe("demo", [setting])


@pytest.mark.parametrize("budget", ["inf", "-inf", "nan", "1e30", "20G", "-5"])
@pytest.mark.parametrize("command", ["params", "search"])
def test_a_budget_that_is_not_a_finite_count_up_to_10g_is_refused(capsys, tmp_path, command, budget):
    argv = [command, f"--budget={budget}"]
    if command == "search":
        argv += ["--space", "tiny", "--trials", "1", "--out", str(tmp_path / "o")]
    assert f"'{budget}' is not a parameter count" in one_line_error(capsys, argv, command)
    assert not (tmp_path / "o").exists()


# ---- item 6: options ----------------------------------------------------------------------------------

@pytest.mark.parametrize("option, message", [
    (["--heartbeat", "0"], "--heartbeat 0: give 1 or more"),
    (["--heartbeat", "-5"], "--heartbeat -5: give 1 or more"),
    (["--seed", "-1"], "--seed -1: give a number from 0 to 4,294,967,295"),
    (["--seed", str(2**32)], f"--seed {2**32}: give a number from 0"),
])
def test_search_refuses_bad_options_before_creating_out(capsys, tmp_path, option, message):
    argv = ["search", "--space", "tiny", "--trials", "1", "--out", str(tmp_path / "s"), *option]
    assert message in one_line_error(capsys, argv, "search")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("jobs", [0, -2])
def test_jobs_below_one_are_refused(jobs):
    with pytest.raises(RecipeError, match=f"--jobs {jobs}: use 1 or more"):
        check_jobs(jobs)


@pytest.mark.parametrize("command", ["experiment", "study"])
def test_experiment_and_study_refuse_jobs_0(capsys, tmp_path, command):
    argv = [command, *(["batch-size"] if command == "experiment" else []), "--scale", "smoke", "--jobs", "0",
            "--out", str(tmp_path / "e"), "--dry-run"]
    assert "--jobs 0: use 1 or more" in one_line_error(capsys, argv, command)


@pytest.fixture
def run_dir(tmp_path):
    """A run directory holding a tiny model's checkpoint."""
    from budgetnet.design.model import ResNet

    recipe = load_recipe("demo", TINY_MODEL)
    checkpoint.save({"model": ResNet(recipe.model).state_dict(), "epoch": 1, "recipe": recipe.to_dict(),
                     "classes": CLASSES}, tmp_path / "run" / "checkpoints" / "best.pt")
    return tmp_path / "run"


@pytest.mark.parametrize("options, message", [
    (["--limit", "5"], "--limit 5 is for --corruptions and --calibration"),
    (["--limit", "0", "--calibration"], "--limit 0: give 1 or more"),
    (["--limit", "-5", "--corruptions"], "--limit -5: give 1 or more"),
    (["--limit", "-5", "--calibration", "--corruptions"], "--limit -5: give 1 or more"),
])
def test_eval_refuses_a_limit_it_would_not_apply_before_writing(capsys, tmp_path, run_dir, options, message):
    argv = ["eval", str(run_dir), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), *options]
    assert message in one_line_error(capsys, argv, "eval")
    assert not (tmp_path / "o").exists() and not (run_dir / "eval.json").exists()


def test_an_image_pil_cannot_decode_is_named(tmp_path):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)  # PIL: ValueError on load
    Image.new("RGB", (8, 8)).save(tmp_path / "text-bomb.png", pnginfo=info)
    with pytest.raises(UsageError, match="text-bomb.png: not a readable image"):
        read_image(tmp_path / "text-bomb.png", 32)
