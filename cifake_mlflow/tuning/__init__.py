"""Beside training: Optuna studies whose trials are tracked training runs."""
