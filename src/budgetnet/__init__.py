"""budgetnet: design, train and compare residual networks under a hard parameter budget on CIFAR-10."""

__version__ = "0.2.0"  # 0.2.0: checkpoints carry class names and the budgetnet version
