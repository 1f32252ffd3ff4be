"""benchmarks/gpu_check.py and vs_airbench.py on the CPU: the GPU machine's command (gpu_job.sh) as a smoke job end to
end, the deadline, airbench's data files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from budgetnet.config import load_recipe
from budgetnet.workflows.search.space import load_space
from budgetnet.data.cifar import from_arrays
from budgetnet.design.model import flops_per_image

from conftest import CLASSES, TINY_MODEL, synthetic_arrays

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check
import vs_airbench


def airbench_wheel(tmp_path: Path) -> Path:
    """The folder holding the airbench 0.1.8 wheel the GPU job carries: .device/wheels when built there, else
    built now into tmp_path (skip when no package index can be reached)."""
    built = BENCHMARKS.parent / ".device" / "wheels"
    if (built / "airbench-0.1.8-py3-none-any.whl").is_file():
        return built
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp_path),
                           "airbench==0.1.8"], capture_output=True, text=True, timeout=300)
    if proc.returncode:
        pytest.skip("no airbench wheel in .device/wheels and none could be built (no package index)")
    return tmp_path


def test_the_gpu_machines_command_runs_every_stage_of_the_smoke_job(tmp_path):
    """benchmarks/gpu_job.sh --smoke as the GPU machine runs it: the wheel installed with --no-index into a target
    folder, budgetnet from PYTHONPATH=src, under the outer timeout."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "JOB_SITE": str(tmp_path / "site"),
           "JOB_WHEELS": str(airbench_wheel(tmp_path / "wheels"))}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([shutil.which("bash"), str(BENCHMARKS / "gpu_job.sh"), "--smoke"], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "airbench" / "utils.py").is_file()  # what the job ran was the wheel's airbench
    result = json.loads((out / "results.json").read_text())
    stages = {r["stage"]: r for r in result["stages"]}
    assert list(stages) == [name for name in gpu_check.STAGES if name not in gpu_check.ONLY_ALONE]  # best: --stage
    assert all(r["status"] == "done" and r["rows"] for r in stages.values()), [r["status"] for r in stages.values()]
    assert "SMOKE" in result["device"]
    tiny = flops_per_image(load_recipe("seed", gpu_check.TINY_SEED).model)["forward_backward"]
    plain, *ours = stages["throughput"]["rows"]
    assert plain["gflop_per_image"] == pytest.approx(tiny / 1e9)
    assert all(r["vs_plain"] == pytest.approx(r["images_per_s"] / plain["images_per_s"]) for r in ours)
    crop_flip, jsd = stages["augmix"]["rows"]
    assert jsd["gflop_per_image"] == pytest.approx(3 * tiny / 1e9)
    assert jsd["cost_vs_crop_flip"] == pytest.approx(crop_flip["images_per_s"] / jsd["images_per_s"])
    assert stages["seed-steps"]["rows"][0]["weights_and_momentum_finite"] is True
    # small's second row (vs airbench94_muon) comes after the systems
    muon = ["airbench94_muon", "small-muon", "small-lean", "small"] if vs_airbench.MUON_FILE.is_file() else []
    assert [r["system"] for r in stages["airbench"]["rows"]] == ["airbench94", "small", "airbench95", "fast", *muon]
    assert sum("airbench.CifarLoader" in n for n in stages["airbench"]["notes"]) == 1
    assert [r["epoch"] for r in stages["seed-fast"]["rows"]] == [1, "run"]
    markdown = (out / "results.md").read_text()
    assert all(f"## {name}: done" in markdown for name in stages) and "## Targets" in markdown


def test_the_decision_stages_run_only_when_named_and_measure_each_lever_and_trial_length(tmp_path):
    """levers: one row per lever (seeds, validation and test accuracy); fidelity: one row per trial length, the
    full length's agreement with itself 1 once 3 designs are in. Neither runs in a whole job."""
    assert {"levers", "fidelity"} <= set(gpu_check.ONLY_ALONE)
    assert gpu_check.main(["--out", str(tmp_path), "--smoke", "--stage", "levers", "--stage", "fidelity"]) == 0
    stages = {r["stage"]: r for r in json.loads((tmp_path / "results.json").read_text())["stages"]}
    assert list(stages) == ["levers", "fidelity"] and all(r["status"] == "done" for r in stages.values())
    levers = stages["levers"]["rows"]
    assert [r["lever"] for r in levers] == [name for name, _, _ in gpu_check.LEVERS]
    assert all(r["seeds"] == 1 and 0 <= r["val_acc"] <= 1 and 0 <= r["test_acc"] <= 1 for r in levers)
    trial = load_space(gpu_check.FIDELITY_SPACE).recipe({}).epochs
    lengths = sorted({*gpu_check.FIDELITY_LENGTHS, trial, load_recipe("small").epochs})
    assert [r["epochs"] for r in stages["fidelity"]["rows"]] == lengths
    assert all(r["designs"] == 2 and r["spearman"] is None for r in stages["fidelity"]["rows"])


def test_rank_agreement_is_spearmans_over_the_designs_trained_at_full_length():
    accs = {0: [0.5, 0.6, 0.7], 1: [0.4, 0.7, 0.8], 2: [0.3, 0.8, 0.9], 3: [0.2, 0.5, None]}  # 2, 4, 8 epochs
    runs = [{"design": d, "epochs": e, "val_acc": a, "train_seconds": 1.0}
            for d, row in accs.items() for e, a in zip((2, 4, 8), row) if a is not None]
    rows = {r["epochs"]: r for r in gpu_check.rank_agreement(runs, 8)}
    assert rows[8]["spearman"] == pytest.approx(1.0) and rows[4]["spearman"] == pytest.approx(1.0)
    assert rows[2]["spearman"] == pytest.approx(-1.0)  # design 3, never trained for 8 epochs, is left out
    assert rows[2]["designs"] == 3 and rows[2]["train_seconds"] == 3.0
    assert gpu_check.rank_agreement(runs[:6], 8)[0]["spearman"] is None  # two designs: no agreement to state


def test_a_stage_out_of_time_keeps_its_rows_and_the_job_goes_on(tmp_path, monkeypatch):
    def slow(ctx, record):
        record["rows"].append({"measured": 1})
        time.sleep(30)

    def judge(ctx, record):
        gpu_check.check(record, "rows measured", str(len(record["rows"])), True)

    monkeypatch.setitem(gpu_check.STAGES, "slow", gpu_check.Stage("slow", 1, slow, judge))
    monkeypatch.setitem(gpu_check.STAGES, "quick", gpu_check.Stage("quick", 1, lambda ctx, r: r["rows"].append({"x": 2})))
    ctx = gpu_check.StageContext(torch.device("cpu"), None, True, None, False)
    start = time.monotonic()
    records = gpu_check.run_stages(["slow", "quick"], ctx, start + 4,
                                   lambda recs: gpu_check.write_results(tmp_path, {"device": "cpu"}, recs))
    assert time.monotonic() - start < 10
    assert records[0]["status"].startswith("out of time") and records[0]["rows"] == [{"measured": 1}]
    assert records[0]["checks"] == [{"target": "rows measured", "measured": "1", "met": True}]  # judged all the same
    assert records[1]["status"] == "done" and records[1]["cap_s"] > 1  # the rest of the deadline went to it
    assert "## slow: out of time" in (tmp_path / "results.md").read_text()


def test_a_training_stage_cut_by_its_deadline_keeps_its_epochs(tiny_data, monkeypatch):
    stage = gpu_check.Stage("long", 1, lambda ctx, record: gpu_check.train_seeds(ctx, stage, record, "demo"),
                            smoke=[*TINY_MODEL, "epochs=100000", "batch_size=64"])
    monkeypatch.setitem(gpu_check.STAGES, "long", stage)
    ctx = gpu_check.StageContext(torch.device("cpu"), tiny_data, True, None, False)
    # 15 s: room for at least one tiny epoch on a loaded 2-core machine; 100,000 epochs cannot fit
    records = gpu_check.run_stages(["long"], ctx, time.monotonic() + 15, lambda recs: None)
    record = records[0]
    assert record["status"].startswith("out of time")
    epochs = [r["epoch"] for r in record["rows"]]
    assert epochs and epochs == list(range(1, len(epochs) + 1))  # every finished epoch, no "run" row
    assert all(r["seconds"] > 0 and r["images_per_s"] > 0 and r["recipe"] == "demo" for r in record["rows"])


def test_the_deadline_stops_a_stage_through_code_that_rewraps_exceptions(tmp_path, monkeypatch):
    def rewrapping(ctx, record):  # what torch.compile does with an exception raised inside it
        try:
            time.sleep(30)
        except Exception as e:
            raise RuntimeError("wrapped") from e

    monkeypatch.setitem(gpu_check.STAGES, "wrapped", gpu_check.Stage("wrapped", 1, rewrapping))
    ctx = gpu_check.StageContext(torch.device("cpu"), None, True, None, False)
    records = gpu_check.run_stages(["wrapped"], ctx, time.monotonic() + 2, lambda recs: None)
    assert records[0]["status"].startswith("out of time")


def test_airbench_data_files_hold_our_images(tmp_path):
    data = from_arrays(synthetic_arrays(64, 0), None, synthetic_arrays(32, 1), CLASSES)
    folder = vs_airbench.write_airbench_data(data, tmp_path / "cifar10")
    assert vs_airbench.check_airbench_data(data, folder) == 64
    saved = torch.load(folder / "test.pt", weights_only=True)
    assert saved["images"].shape == (32, 32, 32, 3) and saved["classes"] == CLASSES
    wrong = from_arrays(synthetic_arrays(64, 2), None, synthetic_arrays(32, 1), CLASSES)
    with pytest.raises(RuntimeError, match="different images or labels"):
        vs_airbench.check_airbench_data(wrong, folder)


def test_missing_npz_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match="cifar10_from_jpeg.py beside it"):
        gpu_check.rebuild_data(tmp_path / "cifar10-jpeg.npz", tmp_path / "data")
