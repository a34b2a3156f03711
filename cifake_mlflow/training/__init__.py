"""Stage 3, training: TrainConfig, fitting, and one tracked training run."""
