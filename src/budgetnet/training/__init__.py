"""Training a recipe into a run directory: the loop, optimizers, schedules, averages, losses, checkpoints, runtime."""
