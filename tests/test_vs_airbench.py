"""benchmarks/vs_airbench.py on the CPU: airbench's own code beside budgetnet for a few steps, its FLOPs, and the
run-time changes that let airbench run here undone afterwards."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

airbench = pytest.importorskip("airbench")
import vs_airbench


def test_smoke_trains_both_sides_on_the_cpu_and_restores_what_it_changed(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = (nn.Module.cuda, nn.Module.half, torch.cuda.Event, torch.cuda.synchronize, airbench.utils.CifarLoader)
    assert vs_airbench.main(["--smoke", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (nn.Module.cuda, nn.Module.half, torch.cuda.Event, torch.cuda.synchronize,
            airbench.utils.CifarLoader) == saved
    assert list(tmp_path.iterdir()) == []  # neither side wrote anything where it ran
    runs = {(r["system"], r["run"]): r for r in out["runs"]}
    assert runs[("data files", "smoke")]["checked_images"] == 256
    for system in ("airbench94", "small", "cpu"):
        cold, warm = runs[(system, "cold")], runs[(system, "warm")]
        assert cold["seed"] != warm["seed"]  # the cold run is no warm run's repeat
        assert 0 <= warm["accuracy"] <= 1 and warm["seconds"] > 0 and warm["pflop"] > 0
    assert runs[("airbench94", "warm")]["params"] == 1_971_352  # airbench's full network ran, 2 steps
    assert runs[("small", "warm")]["train_seconds"] <= runs[("small", "warm")]["seconds"]
    rows = {r["system"]: r for r in out["rows"]}
    assert rows["small"]["vs"] == rows["cpu"]["vs"] == "airbench94"
    assert rows["small"]["flop_ratio"] == pytest.approx(rows["small"]["pflop"] / rows["airbench94"]["pflop"])
    assert "threads" in out["device_name"]


def test_airbench_flops_match_its_readme():
    """0.36 PFLOP for airbench94 and 1.4 for airbench95 (its README): training images seen plus 6-view TTA."""
    for name, readme in (("94", 0.36), ("95", 1.4)):
        module = getattr(airbench, f"lib_airbench{name}")
        flops = vs_airbench.airbench_flops(getattr(module, f"make_net{name}"))
        seen = math.ceil(50_000 // 1024 * module.hyp["opt"]["train_epochs"]) * 1024
        total = (flops["forward_backward"] * seen + flops["forward"] * 10_000 * 6) / 1e15
        assert total == pytest.approx(readme, rel=0.05)


def test_budgetnets_flops_count_the_images_a_fractional_run_sees(tiny_data):
    from budgetnet.design.model import flops_per_image
    from conftest import tiny_recipe
    recipe = tiny_recipe("epochs=1.5")
    flops = flops_per_image(recipe.model)
    run = vs_airbench.run_budgetnet(recipe, tiny_data, torch.device("cpu"), seed=0)
    seen, tested = 12 * 64, 256  # 1.5 epochs of 8 batches of 64; the 256 test images once, after the last epoch
    assert run["pflop"] * 1e15 == pytest.approx(flops["forward_backward"] * seen + flops["forward"] * tested)


def test_the_cpu_network_keeps_fp32_weights_and_returns_fp32_logits():
    net = vs_airbench.cpu_net(airbench.make_net94, "bf16")
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in net.parameters())
    assert net(torch.zeros(2, 3, 32, 32)).dtype == torch.float32


def test_a_cold_run_alone_fills_its_row():
    """--seeds 0: one run a system; its figures fill the row, which says that no warm run was made."""
    runs = [{"system": "airbench94", "run": "cold", "seed": 0, "accuracy": 0.9, "seconds": 100.0,
             "train_seconds": None, "params": 1, "pflop": 0.36, "precision": "bf16"},
            {"system": "cpu", "run": "cold", "seed": 0, "accuracy": 0.91, "seconds": 80.0, "train_seconds": 70.0,
             "params": 2, "pflop": 0.3, "precision": "bf16"}]
    rows = {r["system"]: r for r in vs_airbench.summarize(runs, [("airbench94", "cpu")])}
    assert rows["cpu"]["seeds"] == 0 and rows["cpu"]["accuracy"] == 0.91 and rows["cpu"]["cold_seconds"] == 80.0
    assert rows["cpu"]["time_ratio"] == pytest.approx(0.8) and rows["cpu"]["target_met"] is True


@pytest.mark.parametrize("seeds, cold_seed, expected", [(0, None, [0]), (0, 1, [1]), (2, None, [2, 0, 1]),
                                                        (1, 5, [5, 0])])
def test_the_cold_run_takes_its_own_seed(monkeypatch, tmp_path, seeds, cold_seed, expected):
    """The cold run's seed is --cold-seed, else --seeds (a seed no warm run uses); the warm runs take 0..seeds-1
    (one system stands for both sides: only airbench trains, faked)."""
    seen = []
    monkeypatch.setattr(vs_airbench, "write_airbench_data", lambda data, folder: None)
    monkeypatch.setattr(vs_airbench, "run_airbench", lambda system, folder, device, seed, *a: seen.append(seed) or {})
    runs = []
    vs_airbench.compare([("airbench94", "airbench94")], None, torch.device("cpu"), seeds, tmp_path, runs.append,
                        cold_seed=cold_seed)
    assert seen == expected
    assert [r["seed"] for r in runs if r["system"] == "airbench94"] == expected
