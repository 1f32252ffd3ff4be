"""eval --corruptions --calibration: eval.json gains the corruption table and ECE, with their PNGs; runs compare."""
from __future__ import annotations

import json

import pytest
import yaml

from budgetnet.checkpoint import load_model
from budgetnet.cli import main
from budgetnet.corruptions import CORRUPTIONS
from budgetnet.report import find_runs, report
from budgetnet.robustness import compare_robustness
from test_export import make_run


def test_eval_corruptions_json_and_comparison(tmp_path, fake_cifar, capsys):
    run = make_run(tmp_path)
    rc = main(["eval", str(run), "--data", str(fake_cifar), "--device", "cpu", "--corruptions", "--calibration",
               "--severities", "1", "5", "--limit", "16", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((run / "eval.json").read_text())
    assert set(result["per_corruption"]) == set(CORRUPTIONS)
    for accs in result["per_corruption"].values():
        assert set(accs) == {"1", "5", "mean"} and accs["mean"] == pytest.approx((accs["1"] + accs["5"]) / 2)
    means = [accs["mean"] for accs in result["per_corruption"].values()]
    assert result["corruption_accuracy"] == pytest.approx(sum(means) / len(means))
    assert result["corruption_images"] == 16 and 0 <= result["ece"] <= 1 and "accuracy" in result
    assert (run / "corruptions.png").is_file() and (run / "reliability.png").is_file()

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
