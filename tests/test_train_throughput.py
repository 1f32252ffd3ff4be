"""benchmarks/train_throughput.py --smoke --augmix on the CPU: every row, AugMix+JSD priced against crop+flip."""
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
