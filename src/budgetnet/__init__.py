"""budgetnet: design, train and compare residual networks under a hard parameter budget on CIFAR-10."""

__version__ = "0.1.0"
