"""One short real training run: a small ResNet on a CIFAR-10 subset must clearly beat chance on the real test set."""
import pytest

from budgetnet.config import load_recipe
from budgetnet.training.loop import train


@pytest.mark.slow
def test_small_resnet_learns_real_cifar10(real_cifar, tmp_path):
    recipe = load_recipe("demo", ["epochs=2", "data.train_size=5000", "data.test_size=2000"])
    summary = train(recipe, tmp_path / "run", data_dir=real_cifar, progress=False)
    assert summary.final_test_acc > 0.30, summary  # chance is 0.10
