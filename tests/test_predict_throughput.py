"""benchmarks/predict_throughput.py --smoke: predict's .npy-to-CSV path and eval's scoring timed on one model."""
import os
import re
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "predict_throughput.py"


def test_smoke_prints_images_per_second_for_predict_and_eval():
    src = str(BENCHMARK.parents[1] / "src")  # this checkout's budgetnet, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, str(BENCHMARK), "--smoke", "--recipe", "demo"], capture_output=True,
                         text=True, env=env, check=True).stdout
    assert out.startswith("200 synthetic 32x32 images, recipe 'demo'")
    rows = {m[1].strip(): (float(m[2].replace(",", "")), int(m[3]), int(m[4]))
            for m in re.finditer(r"^([^\d\n]+?) +([\d,]+) +(\d+) +(\d+)$", out, re.M)}
    assert set(rows) == {"predict (.npy to CSV)", "eval scoring", "eval scoring, one view"}
    assert all(ips > 0 for ips, _, _ in rows.values())
    assert rows["predict (.npy to CSV)"][1:] == (256, 1) and rows["eval scoring, one view"][2] == 1
