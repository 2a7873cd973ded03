"""Training: data and masks, sizing, the trainer, GGUF export and the metrics it logs."""
