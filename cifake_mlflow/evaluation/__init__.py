"""Stage 4, evaluation: metrics, plots, calibration, robustness, Grad-CAM, one evaluation run."""
