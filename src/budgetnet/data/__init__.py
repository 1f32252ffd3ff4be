"""The data: CIFAR loading and checks, uint8 tensors on the device (cifar); batched augmentation (augment)."""
