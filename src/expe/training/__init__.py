"""Training: the loop, checkpoints, distributed launch, step-time measurement, experiment trackers."""
