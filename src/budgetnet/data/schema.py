"""The recipe's data section (DataConfig) and the data sets' facts it is checked against; no torch, so that a recipe
is checked without loading the data stack."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..choices import check_choices, check_rule as _check
from ..design.spec import ModelSpec
from ..errors import RecipeError

Dataset = Literal["cifar10", "cifar100"]
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
SPLIT_SIZES = {"train": 50_000, "test": 10_000}
IMAGE_SHAPE = (3, 32, 32)  # channels, height, width of every image of both
CHANNEL_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}  # of the [0, 1] pixels
CHANNEL_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


@dataclass
class DataConfig:
    dataset: Dataset = "cifar10"
    train_size: int | None = None     # use only the first N training images (quick runs)
    val_size: int = 0                 # hold the last N training images out for validation (tuning)
    test_size: int | None = None      # evaluate on the first N test images only (quick looks)

    def validate(self, model: ModelSpec | None = None) -> None:
        """Raise RecipeError for a data section that cannot load, or whose images or classes `model` does not fit."""
        check_choices(self, "data.", RecipeError)
        n_train, n_test = SPLIT_SIZES["train"], SPLIT_SIZES["test"]
        _check(0 <= self.val_size < n_train, "data.val_size", self.val_size, f"must be between 0 and {n_train - 1}")
        _check(self.train_size is None or 0 < self.train_size <= n_train - self.val_size, "data.train_size",
               self.train_size, f"must be between 1 and {n_train - self.val_size}")
        _check(self.test_size is None or 0 < self.test_size <= n_test, "data.test_size", self.test_size,
               f"must be between 1 and {n_test}")
        if model is None:
            return
        classes, (channels, size, _) = NUM_CLASSES[self.dataset], IMAGE_SHAPE
        _check(model.num_classes == classes, "data.dataset", self.dataset,
               f"has {classes} classes but model.num_classes={model.num_classes}: add --set "
               f"model.num_classes={classes}")
        _check(model.in_channels == channels, "model.in_channels", model.in_channels,
               f"but {self.dataset} images have {channels} channels: set model.in_channels={channels}")
        _check(model.image_size == size, "model.image_size", model.image_size,
               f"but {self.dataset} images are {size}x{size}: set model.image_size={size}")

