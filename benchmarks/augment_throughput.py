"""Augmentation throughput: budgetnet's batched policies vs torchvision's per-image transforms in a DataLoader.

    python benchmarks/augment_throughput.py [--policies augmix-jsd,autoaugment] [--json]

Images/s for each policy: budgetnet on whole batches on the device (CPU, and CUDA when present), against
torchvision.transforms.v2 applied image by image to uint8 tensors in a torch DataLoader with 2 workers (what
training scripts usually do), both ending with float32 images in [0, 1]. AugMix with JSD counts source images
(each gives three views). Images: CIFAR-10's test split from $BUDGETNET_DATA if set, else random uint8.
budgetnet runs on one torch thread by default (--threads), against the reference's two worker processes.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset

from budgetnet.data.augment import build_augment
from budgetnet.data.policies import parse_augment

TO_FLOAT = T.ToDtype(torch.float32, scale=True)


class ThreeViews:
    """torchvision's AugMix with JSD, as in the AugMix paper's training script: clean, augmix, augmix."""

    def __init__(self) -> None:
        self.augmix = T.Compose([T.AugMix(), TO_FLOAT])

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return TO_FLOAT(image), self.augmix(image), self.augmix(image)


POLICIES = {  # name: (budgetnet recipe, torchvision per-image transform)
    "crop+flip": ([{"name": "crop", "padding": 4}, {"name": "flip"}],
                  T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), TO_FLOAT])),
    "autoaugment": ([{"name": "autoaugment"}], T.Compose([T.AutoAugment(T.AutoAugmentPolicy.CIFAR10), TO_FLOAT])),
    "randaugment": ([{"name": "randaugment"}], T.Compose([T.RandAugment(), TO_FLOAT])),
    "trivialaugment": ([{"name": "trivialaugment"}], T.Compose([T.TrivialAugmentWide(), TO_FLOAT])),
    "augmix": ([{"name": "augmix"}], T.Compose([T.AugMix(), TO_FLOAT])),
    "augmix-jsd": ([{"name": "augmix", "jsd": True}], ThreeViews()),
}


class Images(Dataset):
    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i])


def load_images(n: int) -> tuple[torch.Tensor, str]:
    """n uint8 images [n, 3, 32, 32] and where they came from."""
    if os.environ.get("BUDGETNET_DATA"):
        from budgetnet.data.cifar import load_split
        x, _, _ = load_split("cifar10", "test", os.environ["BUDGETNET_DATA"])
        return torch.from_numpy(x[:n]).contiguous(), f"CIFAR-10 test images from {os.environ['BUDGETNET_DATA']}"
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), "random uint8 images ($BUDGETNET_DATA unset)"


def budgetnet_ips(recipe: list[dict], images: torch.Tensor, batch_size: int, device: str) -> float:
    augment = build_augment(parse_augment(recipe), num_classes=10)
    images = images.to(device)
    labels = torch.zeros(len(images), dtype=torch.long, device=device)
    batches = [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    augment(*batches[0])  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for x, y in batches:
        augment(x, y)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def reference_ips(transform, images: torch.Tensor, batch_size: int, workers: int) -> float:
    """Steady-state images/s of the per-image pipeline (timed from the first batch, so worker start-up is excluded)."""
    loader = DataLoader(Images(images, transform), batch_size=batch_size, num_workers=workers, shuffle=True)
    seen, start = 0, None
    for batch in loader:
        if start is None:
            start = time.perf_counter()
            continue
        seen += len(batch[0] if isinstance(batch, (list, tuple)) else batch)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated, from {', '.join(POLICIES)}")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--images", type=int, default=10240, help="images per budgetnet measurement")
    parser.add_argument("--reference-images", type=int, default=3072, help="images per torchvision measurement")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the torchvision pipeline")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the budgetnet side (default: %(default)s, half the reference's 2 "
                             "worker processes; on a 2-core machine shared with other jobs, 2 OpenMP threads "
                             "stall on each other and lose most of their speed)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.policies.split(",")
    for name in names:
        if name not in POLICIES:
            parser.error(f"unknown policy {name!r}: choose from {', '.join(POLICIES)}")
    images, source = load_images(max(args.images, args.reference_images))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for name in names:
        recipe, transform = POLICIES[name]
        reference = reference_ips(transform, images[:args.reference_images], args.batch_size, args.workers)
        for device in devices:
            ours = budgetnet_ips(recipe, images[:args.images], args.batch_size, device)
            rows.append({"policy": name, "budgetnet_ips": round(ours), "reference_ips": round(reference),
                         "ratio": round(ours / reference, 2), "device": device})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"images: {source}; batch {args.batch_size}; torch threads {torch.get_num_threads()}; "
          f"torchvision per image in a DataLoader with {args.workers} workers (on the CPU); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work skews the figures)")
    print(f"{'policy':<16}{'device':<8}{'budgetnet img/s':>17}{'torchvision img/s':>19}{'ratio':>8}")
    for r in rows:
        print(f"{r['policy']:<16}{r['device']:<8}{r['budgetnet_ips']:>17,}{r['reference_ips']:>19,}{r['ratio']:>7.1f}x")


if __name__ == "__main__":
    main()
