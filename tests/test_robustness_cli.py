"""eval --corruptions --calibration: accuracy, ECE and the corruption table equal an independent computation on a
trained model; eval.json holds them, with their PNGs; runs compare."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import yaml

from budgetnet.cli import main
from budgetnet.evaluation.corruptions import CORRUPTIONS, corrupt, load_cifar10c
from budgetnet.evaluation.robustness import compare_robustness
from budgetnet.training.checkpoint import load_model
from budgetnet.workflows.report import find_runs, report
from test_export import make_run


MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # CIFAR-10's, written out independently


def fake_test_split(root):
    """The fake CIFAR-10's test images (uint8 NHWC) and labels, read with pickle, not with budgetnet's loader."""
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f)
    return batch["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(batch["labels"])


def probabilities(run, images_nhwc):
    """Softmax of the run's model on uint8 NHWC images, normalized by hand."""
    model = load_model(run)[0]
    x = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).softmax(1).numpy()


def ece_by_hand(probs, labels, bins=15):
    """Guo et al.'s ECE: |accuracy - confidence| per equal-width confidence bin, weighted by its share."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    total = 0.0
    for low, high in zip(np.arange(bins) / bins, np.arange(1, bins + 1) / bins):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


@pytest.fixture(autouse=True)
def corruption_cache(tmp_path, monkeypatch):
    """Generated corruptions are cached under $XDG_CACHE_HOME/budgetnet: a folder of the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "budgetnet" / "corruptions"


def test_eval_corruptions_and_calibration_equal_an_independent_computation(tmp_path, fake_cifar, capsys,
                                                                          trained_run, corruption_cache, monkeypatch):
    run, out = trained_run, tmp_path / "eval"
    rc = main(["eval", str(run), "--data", str(fake_cifar), "--device", "cpu", "--corruptions", "--calibration",
               "--severities", "1", "5", "--limit", "64", "--out", str(out), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((out / "eval.json").read_text())

    images, labels = fake_test_split(fake_cifar)
    clean = probabilities(run, images)
    assert 0.5 < (clean.argmax(1) == labels).mean() < 1  # a trained model that still errs: the checks have teeth
    assert result["accuracy"] == (clean.argmax(1) == labels).mean() and result["images"] == len(labels)
    assert result["ece"] == pytest.approx(ece_by_hand(clean[:64], labels[:64]), abs=1e-6)
    assert result["ece_images"] == 64

    assert set(result["per_corruption"]) == set(CORRUPTIONS) and result["corruption_images"] == 64
    for name, accs in result["per_corruption"].items():
        for severity in (1, 5):
            corrupted = corrupt(images[:64], name, severity)
            assert accs[str(severity)] == (probabilities(run, corrupted).argmax(1) == labels[:64]).mean(), name
        assert set(accs) == {"1", "5", "mean"} and accs["mean"] == pytest.approx((accs["1"] + accs["5"]) / 2)
    means = [accs["mean"] for accs in result["per_corruption"].values()]
    assert result["corruption_accuracy"] == pytest.approx(sum(means) / len(means))
    assert result["corruption_accuracy"] < result["accuracy"]  # corruptions hurt a model trained on clean images
    assert (out / "corruptions.png").is_file() and (out / "reliability.png").is_file()

    cached = list(corruption_cache.glob("*/CIFAR-10-C"))  # all five severities, for a later call with any
    assert len(cached) == 1 and load_cifar10c(cached[0], "snow", 3)[0].shape == (64, 32, 32, 3)
    monkeypatch.setattr("budgetnet.evaluation.corruptions.corrupt", lambda *a, **k: pytest.fail("generated again"))
    assert main(["eval", str(run), "--data", str(fake_cifar), "--device", "cpu", "--corruptions",
                 "--severities", "1", "5", "--limit", "64", "--out", str(tmp_path / "again"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)  # the second call reads the cache: the same numbers
    assert again["per_corruption"] == result["per_corruption"] and again["corruption_source"] == "generated"


def test_robustness_comparison_and_report(tmp_path, fake_cifar, capsys):
    run = make_run(tmp_path)
    assert main(["eval", str(run), "--data", str(fake_cifar), "--device", "cpu", "--corruptions",
                 "--severities", "1", "--limit", "8", "--json"]) == 0
    out = compare_robustness([run, run], tmp_path / "report")
    assert out.is_file()
    bare = make_run(tmp_path / "bare")
    with pytest.raises(ValueError, match="--corruptions"):
        compare_robustness([run, bare], tmp_path / "report")

    for r in (run, bare):  # budgetnet report shows the runs that hold corruption results
        (r / "recipe.yaml").write_text(yaml.safe_dump(load_model(r)[1].to_dict()))
    md = report(find_runs([run, bare]), tmp_path / "compared")
    assert (tmp_path / "compared" / "robustness.png").is_file() and "robustness.png" in md.read_text()


def test_eval_without_checkpoints_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty"), "--corruptions"]) == 2
    assert "no checkpoints/" in capsys.readouterr().err
