"""budgetnet recipes beside KellerJordan's airbench on the same GPU and data, one after the other in one process.

    python benchmarks/vs_airbench.py [--pairs airbench94:small,airbench95:fast] [--seeds 3] [--json]
    python benchmarks/vs_airbench.py --smoke      # CPU: a few steps of budgetnet's side, airbench's data files

One clock for both sides: CUDA-synchronised wall time from the first training step to the final (TTA) test
accuracy, with the data already on the GPU (airbench: train9x(verbose=False) then its evaluate at TTA level 2;
budgetnet: `train` with evaluation only after the last epoch). The first run of each system in the process is the
cold run (cuDNN autotuning, compilation): it is reported on its own, and the seeds that follow are the warm runs
whose mean and spread the table shows. airbench reads `cifar10/train.pt` and `cifar10/test.pt` under the working
directory; they are written from budgetnet's loader, so both sides see the same images. airbench (0.1.8, the
`bench` extra) needs CUDA; with --smoke on the CPU its side only writes and reads those files and imports it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from budgetnet.config import DataConfig, Recipe, load_recipe
from budgetnet.data import Data, from_arrays, load_data
from budgetnet.train import train

from tables import markdown

AIRBENCH = ("airbench94", "airbench95", "airbench96")
DEFAULT_PAIRS = (("airbench94", "small"), ("airbench95", "fast"))
SMOKE = ["epochs=1", "batch_size=32", "eval_batch_size=64", "compile=false", "model.channels=[8, 16, 16]"]


def clock(device: torch.device) -> float:
    """Seconds of a wall clock after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def write_airbench_data(data: Data, folder: Path) -> Path:
    """airbench's data files (train.pt, test.pt: uint8 NHWC images, int64 labels, class names) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in (("train", data.train), ("test", data.test)):
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous().cpu(), "labels": labels.cpu(),
                    "classes": list(data.classes)}, folder / f"{name}.pt")
    return folder


def check_airbench_data(data: Data, folder: Path) -> int:
    """Read the files back with airbench's own loader on the CPU; they must hold our images and labels.
    Returns the number of training images checked."""
    from airbench import CifarLoader

    loader = CifarLoader(str(folder), train=True, batch_size=len(data.train[0]), aug={}, shuffle=False, gpu="cpu")
    images, labels = next(iter(loader))
    ours = data.normalize(data.train[0].float().cpu() / 255)
    if not (torch.equal(labels, data.train[1].cpu()) and torch.allclose(images.float(), ours, atol=0.02)):
        raise RuntimeError(f"airbench's loader reads different images or labels from {folder}")
    return len(labels)


def run_budgetnet(recipe: Recipe, data: Data, device: torch.device, seed: int, eval_every: int | None = None,
                  on_epoch: Callable[[dict], None] | None = None) -> dict:
    """One training run of a recipe: accuracy (TTA, after the last epoch), seconds on the one clock and the loop's
    own train_seconds (evaluation excluded). It evaluates after the last epoch only, or every `eval_every`."""
    recipe = load_recipe(recipe.to_dict(), [f"seed={seed}", f"eval_every={eval_every or recipe.epochs}"])
    with tempfile.TemporaryDirectory() as out:
        start = clock(device)
        summary = train(recipe, out, progress=False, data=data, on_epoch=on_epoch)
        seconds = clock(device) - start
    return {"accuracy": summary["final_test_acc"], "seconds": seconds, "train_seconds": summary["train_seconds"],
            "params": summary["params"]}


def run_airbench(name: str, folder: Path, device: torch.device, seed: int) -> dict:
    """One airbench run (its default hyperparameters) on the files in `folder`, named .../cifar10."""
    import airbench

    module = getattr(airbench, f"lib_{name}")
    trainer = getattr(airbench, f"train{name[-2:]}")
    torch.manual_seed(seed)
    cwd = os.getcwd()
    os.chdir(folder.parent)  # airbench opens its test set as cifar10/test.pt
    try:
        loader = airbench.CifarLoader(folder.name, train=True, batch_size=module.hyp["opt"]["batch_size"],
                                      aug=module.hyp["aug"], altflip=True)
        test_loader = airbench.CifarLoader(folder.name, train=False, batch_size=2000)
        start = clock(device)
        model = trainer(loader, verbose=False)
        accuracy = airbench.evaluate(model, test_loader, tta_level=module.hyp["net"]["tta_level"])
        seconds = clock(device) - start
    finally:
        os.chdir(cwd)
    # trainable parameters: BatchNorm scales and the whitening filters never train; the whitening bias trains
    # for the first epochs and is frozen (requires_grad False) by the end
    params = sum(p.numel() for name, p in model.named_parameters() if p.requires_grad or name == "0.bias")
    return {"accuracy": accuracy, "seconds": seconds, "params": params}


def compare(pairs: list[tuple[str, str]], data: Data, device: torch.device, seeds: int, folder: Path,
            on_run: Callable[[dict], None], smoke: bool = False) -> None:
    """Run every system of `pairs` cold once, then `seeds` warm times; each finished run goes to `on_run`.

    With smoke, budgetnet's recipes train tiny for a few steps and airbench's side checks its data files."""
    write_airbench_data(data, folder)
    for system in dict.fromkeys(name for pair in pairs for name in pair):
        if system in AIRBENCH and device.type != "cuda":
            if not smoke:
                raise RuntimeError(f"{system} needs CUDA: run on a GPU, or pass --smoke")
            import airbench  # noqa: F401  (the bench extra is installed and imports)
            on_run({"system": system, "run": "smoke", "checked_images": check_airbench_data(data, folder)})
            continue
        for i, seed in enumerate([0, *range(seeds)]):
            if system in AIRBENCH:
                result = run_airbench(system, folder, device, seed)
            else:
                recipe = load_recipe(system, [f"device={device}", *(SMOKE if smoke else [])])
                result = run_budgetnet(recipe, data, device, seed)
            on_run({"system": system, "run": "cold" if i == 0 else "warm", "seed": seed, **result})


def summarize(runs: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """One row per system (warm runs: accuracy mean and spread, seconds; the cold run's seconds), with each
    budgetnet recipe's ratios to its airbench partner."""
    rows = {}
    for system in dict.fromkeys(r["system"] for r in runs):
        warm = [r for r in runs if r["system"] == system and r["run"] == "warm"]
        cold = [r["seconds"] for r in runs if r["system"] == system and r["run"] == "cold"]
        accs, secs = [r["accuracy"] for r in warm], [r["seconds"] for r in warm]
        rows[system] = {"system": system, "params": next((r["params"] for r in runs
                                                          if r["system"] == system and "params" in r), None),
                        "seeds": len(warm),
                        "accuracy": statistics.mean(accs) if accs else None,
                        "accuracy_spread": statistics.stdev(accs) if len(accs) > 1 else None,
                        "seconds": statistics.mean(secs) if secs else None,
                        "cold_seconds": cold[0] if cold else None}
    for reference, ours in pairs:
        a, b = rows.get(reference), rows.get(ours)
        if a and b and a["seconds"] and b["seconds"]:
            b["vs"] = reference
            b["time_ratio"] = b["seconds"] / a["seconds"]
            b["accuracy_gain"] = b["accuracy"] - a["accuracy"]
            b["target_met"] = b["accuracy"] >= a["accuracy"] and b["seconds"] < a["seconds"]
    return list(rows.values())


COLUMNS = [("system", "system", ""), ("params", "params", ","), ("seeds", "seeds", ""),
           ("test accuracy", "accuracy", ".2%"), ("spread", "accuracy_spread", ".2%"),
           ("seconds (one clock)", "seconds", ".2f"), ("cold run s", "cold_seconds", ".2f"), ("vs", "vs", ""),
           ("time ratio", "time_ratio", ".2f"), ("accuracy gain", "accuracy_gain", "+.2%"), ("target met", "target_met", "")]


def smoke_data(n_train: int, n_test: int) -> Data:
    """Random CIFAR-shaped images on the CPU: enough to run the code paths a few steps (--smoke)."""
    g = torch.Generator().manual_seed(0)
    fake = lambda n: (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),  # noqa: E731
                      torch.randint(0, 10, (n,), generator=g))
    return from_arrays(fake(n_train), None, fake(n_test), [str(i) for i in range(10)])


def parse_pairs(text: str) -> list[tuple[str, str]]:
    pairs = [tuple(item.split(":")) for item in text.split(",")]
    for pair in pairs:
        if len(pair) != 2 or pair[0] not in AIRBENCH:
            raise SystemExit(f"--pairs {text!r}: give AIRBENCH:RECIPE pairs, AIRBENCH one of {', '.join(AIRBENCH)}")
    return pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", default=",".join(f"{a}:{b}" for a, b in DEFAULT_PAIRS),
                   help="airbench:recipe pairs (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="warm runs of each system (default: %(default)s)")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA)")
    p.add_argument("--smoke", action="store_true", help="CPU check: tiny budgetnet runs, airbench's files only")
    p.add_argument("--json", action="store_true", help="print the rows and runs as JSON instead of the table")
    args = p.parse_args(argv)
    pairs = parse_pairs(args.pairs)
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("vs_airbench needs a CUDA GPU (airbench runs only there); on the CPU use --smoke")
    data = smoke_data(128, 64) if args.smoke else load_data(DataConfig(), args.data, device)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        compare(pairs, data, device, 1 if args.smoke else args.seeds, Path(tmp) / "cifar10", runs.append, args.smoke)
    rows = summarize([r for r in runs if "accuracy" in r], pairs)
    if args.json:
        print(json.dumps({"rows": rows, "runs": runs}, indent=1))
    else:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke)"
        print(f"{name}, torch {torch.__version__}, {len(data.train[0]):,} training images\n")
        print(markdown(rows, COLUMNS))
        for r in runs:
            if r["run"] == "smoke":
                print(f"{r['system']}: needs CUDA; its data files hold our {r['checked_images']:,} training images "
                      "(read back with airbench.CifarLoader)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
