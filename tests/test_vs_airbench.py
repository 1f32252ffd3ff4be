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
    saved = (nn.Module.cuda, nn.Module.half, torch.cuda.Event, torch.cuda.synchronize, airbench.utils.CifarLoader,
             torch.load, torch.compile, sys.argv, torch.backends.cudnn.benchmark)
    assert vs_airbench.main(["--smoke", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (nn.Module.cuda, nn.Module.half, torch.cuda.Event, torch.cuda.synchronize, airbench.utils.CifarLoader,
            torch.load, torch.compile, sys.argv, torch.backends.cudnn.benchmark) == saved
    assert list(tmp_path.iterdir()) == []  # neither side wrote anything where it ran
    runs = {(r["system"], r["run"]): r for r in out["runs"]}
    assert runs[("data files", "smoke")]["checked_images"] == 256
    muon = ("airbench94_muon",) if vs_airbench.MUON_FILE.is_file() else ()  # else skipped, as its own test says
    for system in ("airbench94", "small", "cpu", *muon):
        cold, warm = runs[(system, "cold")], runs[(system, "warm")]
        assert cold["seed"] != warm["seed"]  # the cold run is no warm run's repeat
        assert 0 <= warm["accuracy"] <= 1 and warm["seconds"] > 0 and warm["pflop"] > 0
    assert runs[("airbench94", "warm")]["params"] == 1_971_352  # airbench's full network ran, 2 steps
    assert runs[("small", "warm")]["train_seconds"] <= runs[("small", "warm")]["seconds"]
    rows = {(r["system"], r.get("vs")): r for r in out["rows"]}
    assert {("small", "airbench94"), ("cpu", "airbench94"), *(("small", name) for name in muon)} < set(rows)
    for name in ("airbench94", *muon):
        assert rows[("small", name)]["flop_ratio"] == pytest.approx(rows[("small", name)]["pflop"]
                                                                    / rows[(name, None)]["pflop"])
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


def test_budgetnets_flops_count_the_views_a_tta_fraction_scores(tiny_data):
    from budgetnet.design.model import flops_per_image
    from conftest import tiny_recipe
    recipe = tiny_recipe("epochs=1", "tta=flip_translate", "tta_fraction=0.25")
    flops = flops_per_image(recipe.model)
    run = vs_airbench.run_budgetnet(recipe, tiny_data, torch.device("cpu"), seed=0)
    seen, tested = 8 * 64, 256 + 64 * 6  # every test image plainly, then the 6 views of the least confident 64
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
    rows = {r["system"]: r for r in vs_airbench.pair_rows(runs, [("airbench94", "cpu")])}
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
    vs_airbench.compare([("airbench94", "airbench94")], None, torch.device("cpu"), seeds, tmp_path, on_run=runs.append,
                        cold_seed=cold_seed)
    assert seen == expected
    assert [r["seed"] for r in runs if r["system"] == "airbench94"] == expected


def test_without_airbench94_muon_py_its_pairs_are_skipped_with_one_line(capsys, tmp_path):
    missing = tmp_path / "airbench94_muon.py"
    pairs = [("airbench94", "small"), ("airbench94_muon", "small")]
    assert vs_airbench.available_pairs(pairs, missing) == [("airbench94", "small")]
    assert capsys.readouterr().err == vs_airbench.missing_muon_file(missing) + "\n"
    assert str(missing) in vs_airbench.missing_muon_file(missing)


def test_airbench94_muon_runs_its_own_main_on_the_cpu_and_counts_what_it_trained(tmp_path, monkeypatch):
    """Its `main` for its 8 epochs of one 64-image batch (--smoke), its per-epoch evaluations out of its clock and
    FLOPs: 512 training images and a 6-view TTA of the 64 test images, by the counter every row uses."""
    if not vs_airbench.MUON_FILE.is_file():
        pytest.skip(vs_airbench.missing_muon_file(vs_airbench.MUON_FILE))
    monkeypatch.chdir(tmp_path)
    folder = vs_airbench.write_airbench_data(vs_airbench.smoke_data(256, 64), tmp_path / "files" / "cifar10")
    module = vs_airbench.load_airbench94_muon(vs_airbench.MUON_FILE, eager=True)
    evaluations = []
    evaluate = module.evaluate
    monkeypatch.setattr(module, "evaluate", lambda model, loader, tta_level=0: evaluations.append(tta_level)
                        or evaluate(model, loader, tta_level))
    run = vs_airbench.run_airbench94_muon(vs_airbench.MUON_FILE, folder, torch.device("cpu"), seed=0, smoke=True)
    assert evaluations == [0] * 8 + [2]  # its main ran as written: one test evaluation an epoch, then the TTA
    assert run["params"] == 1_971_352 and 0 <= run["accuracy"] <= 1 and run["seconds"] > 0
    flops = vs_airbench.airbench_flops(module.CifarNet)
    assert run["pflop"] * 1e15 == pytest.approx(flops["forward_backward"] * 8 * 64 + flops["forward"] * 64 * 6)
    assert not hasattr(module.zeropower_via_newtonschulz5, "_torchdynamo_orig_callable")  # eager, not compiled
    assert list(tmp_path.iterdir()) == [tmp_path / "files"]  # it wrote nothing (no logs/) where it ran


def test_a_recipe_beside_two_airbench_systems_has_a_row_for_each():
    runs = [{"system": name, "run": "cold", "seed": 0, "accuracy": acc, "seconds": secs, "train_seconds": None,
             "params": 1, "pflop": pflop, "precision": "bf16"}
            for name, acc, secs, pflop in (("airbench94", 0.90, 100.0, 0.36), ("airbench94_muon", 0.91, 80.0, 0.29),
                                           ("small", 0.905, 90.0, 0.36))]
    rows = vs_airbench.pair_rows(runs, [("airbench94", "small"), ("airbench94_muon", "small")])
    ours = [r for r in rows if r["system"] == "small"]
    assert [r["vs"] for r in ours] == ["airbench94", "airbench94_muon"]
    assert [r["time_ratio"] for r in ours] == pytest.approx([0.9, 90 / 80])
    assert [r["target_met"] for r in ours] == [True, False]


def test_small_lean_fits_its_budget_and_small_spends_airbench94_muons():
    """small-lean's target: airbench94_muon's accuracy in 0.25 PFLOP or less, the test evaluation counted; small
    spends airbench94_muon's 0.2973 (all 50,000 training images, the 10,000 test images scored once)."""
    from budgetnet.config import load_recipe
    lean, small = (vs_airbench.run_pflop(load_recipe(name), 50_000, [10_000]) for name in ("small-lean", "small"))
    assert lean <= 0.25 and lean == pytest.approx(0.2451, abs=1e-4)
    assert small == pytest.approx(0.2973, abs=1e-4)
