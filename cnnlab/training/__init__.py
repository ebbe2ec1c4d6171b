"""Training: device and precision, optimizers, the loop, checkpoints and run logging."""
