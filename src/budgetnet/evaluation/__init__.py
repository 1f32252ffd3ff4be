"""Scoring a trained run: accuracy and confusion (evaluate), CIFAR-10-C (corruptions), calibration, robustness."""
