"""benchmarks/train_throughput.py --smoke on the CPU: AugMix+JSD priced against crop+flip, and the optimizer
rows (SGD's and Muon's step cost on small's network in one run)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import train_throughput


def test_smoke_measures_the_augmix_jsd_step_against_crop_flip(capsys):
    assert train_throughput.main(["--device", "cpu", "--smoke", "--augmix", "--json"]) == 0
    rows = {row["loop"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"plain (DataLoader, 2 workers)", "budgetnet", "budgetnet crop+flip",
                         "budgetnet crop+flip+AugMix+JSD"}
    crop_flip, jsd = rows["budgetnet crop+flip"], rows["budgetnet crop+flip+AugMix+JSD"]
    assert jsd["gflop_per_image"] == pytest.approx(3 * crop_flip["gflop_per_image"])  # three views per source image
    assert jsd["cost_vs_crop_flip"] == crop_flip["images_per_s"] / jsd["images_per_s"] > 0
    assert all(row["images_per_s"] > 0 for row in rows.values())


def test_optimizer_rows_measure_each_optimizer_on_small_at_one_batch(capsys, monkeypatch):
    runs = []
    measure = train_throughput.budgetnet_run
    monkeypatch.setattr(train_throughput, "budgetnet_run", lambda *a, **kw: runs.append(kw) or measure(*a, **kw))
    assert train_throughput.main(["--device", "cpu", "--optimizers", "sgd,muon_cheap", "--smoke", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["loop"] for r in rows] == ["budgetnet small, sgd", "budgetnet small, muon_cheap"]
    assert all(r["batch"] == 32 and r["precision"] == "bf16" and r["images_per_s"] > 0 for r in rows)
    assert rows[0]["vs_sgd"] == 1.0
    assert rows[1]["vs_sgd"] == pytest.approx(rows[1]["images_per_s"] / rows[0]["images_per_s"])
    assert [kw["recipe_name"] for kw in runs] == ["small", "small"]
    assert "optimizer.name=muon" not in runs[0]["model_overrides"]  # small's own SGD
    assert {"optimizer.name=muon", "optimizer.muon_batched=true",
            "optimizer.muon_normalize_every=4", "lookahead.enabled=false"} <= set(runs[1]["model_overrides"])


def test_an_unknown_optimizer_name_is_refused_before_anything_runs():
    with pytest.raises(SystemExit, match="--optimizers: adamx unknown; use names from sgd, muon"):
        train_throughput.main(["--device", "cpu", "--optimizers", "sgd,adamx", "--smoke"])
