"""Training throughput of the study's model (ResNet-18, C_1=42): budgetnet's loop vs a plain PyTorch loop.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--steps 10] [--json]

plain: the widely copied kuangliu/pytorch-cifar loop - a torchvision-style Dataset over the same uint8 arrays,
per-image PIL transforms RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader
with 2 worker processes, fp32, contiguous tensors, loss.item() and accuracy .item() every step.
budgetnet: `budgetnet.train.train` on the same arrays and model (data on the device as uint8, batched
augmentation on the device, channels_last, no per-step host sync), in fp32 and in bf16 autocast.

Both train batches of 128 with SGD (momentum 0.9, weight decay 5e-4) in the same process, one after the other;
each is timed over --steps steps after --warmup steps (budgetnet: epoch 2 of a 2-epoch run of --steps batches).
The JSON's budgetnet_ips is the loop as the fast recipes run it (bf16 autocast, channels_last).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from budgetnet.config import load_recipe
from budgetnet.data import DATASETS, from_arrays, load_split
from budgetnet.model import build_model
from budgetnet.train import train

from time_to_accuracy import device_name

BATCH = 128


class ArrayCIFAR(Dataset):
    """torchvision.datasets.CIFAR10's __getitem__ over in-memory arrays: PIL image, transform, label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images.transpose(0, 2, 3, 1), labels, transform  # NHWC as PIL wants

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def plain_ips(images: np.ndarray, labels: np.ndarray, device: torch.device, steps: int, warmup: int) -> float:
    """Images/s of the plain loop over `steps` steps after `warmup` steps."""
    info = DATASETS["cifar10"]
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    loader = DataLoader(ArrayCIFAR(images, labels, transform), batch_size=BATCH, shuffle=True, num_workers=2,
                        drop_last=True)
    torch.manual_seed(0)
    model = build_model(load_recipe("seed").model).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    train_loss = correct = total = 0
    start = None
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        if step == warmup + steps:
            break
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        outputs = model(x)
        loss = F.cross_entropy(outputs, y)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
        correct += outputs.argmax(1).eq(y).sum().item()
        total += y.size(0)
    return steps * BATCH / (time.perf_counter() - start)


def budgetnet_ips(images: np.ndarray, labels: np.ndarray, device: torch.device, steps: int,
                  precision: str, channels_last: bool = True) -> float:
    """Images/s of budgetnet's loop: epoch 2 of a run of `steps` batches per epoch (epoch 1 is the warm-up)."""
    recipe = load_recipe("seed", ["epochs=2", f"batch_size={BATCH}", "schedule.name=constant", f"device={device}",
                                  f"precision={precision}", f"channels_last={channels_last}", "eval_every=2"])
    n = steps * BATCH
    data = from_arrays((images[:n], labels[:n]), None, (images[:BATCH], labels[:BATCH]), [str(i) for i in range(10)],
                       device=device)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as out:
        train(recipe, out, progress=False, on_epoch=rows.append, data=data)
    return rows[-1]["images_per_s"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on CPU, 100 on CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="plain loop warm-up steps (default: 3 on CPU, 20 on CUDA)")
    p.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: $BUDGETNET_DATA)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    steps = args.steps or (100 if device.type == "cuda" else 10)
    warmup = args.warmup or (20 if device.type == "cuda" else 3)
    images, labels, _ = load_split("cifar10", "train", args.data)

    rows = {"plain (DataLoader, 2 workers, fp32)": plain_ips(images, labels, device, steps, warmup),
            "budgetnet (fp32, channels_last)": budgetnet_ips(images, labels, device, steps, "fp32"),
            "budgetnet (bf16, channels_last)": budgetnet_ips(images, labels, device, steps, "bf16")}
    plain, fp32, bf16 = rows.values()
    result = {"budgetnet_ips": round(bf16, 1), "plain_ips": round(plain, 1), "ratio": round(bf16 / plain, 3),
              "budgetnet_fp32_ips": round(fp32, 1), "ratio_fp32": round(fp32 / plain, 3),
              "device": device_name(device), "steps": steps, "batch_size": BATCH}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"ResNet-18 C_1=42 training, batch {BATCH}, {steps} timed steps on {result['device']}")
    print(f"{'loop':<38} {'images/s':>9} {'vs plain':>9}")
    for name, ips in rows.items():
        print(f"{name:<38} {ips:>9.1f} {ips / plain:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
