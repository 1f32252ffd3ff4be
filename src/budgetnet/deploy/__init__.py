"""Using a trained run: export (ONNX, torch.export, standalone), prediction on image files, the model card."""
