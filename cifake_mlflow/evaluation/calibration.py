"""Temperature scaling and the decision threshold, both fitted on the validation split.

A network trained with cross-entropy tends to be over-confident: its 0.99 is right less than
99% of the time. Temperature scaling (Guo et al., 2017) divides the logit by one number ``T``
fitted to minimise validation log loss. It never changes the ranking, so ROC-AUC is untouched,
and ``prob_fake = 0.5`` stays at logit 0, so accuracy at threshold 0.5 is untouched too; what
changes is what a score means. ``T`` and the threshold travel in the logged model's config and
the served pyfunc applies them (:func:`apply_temperature` is the one implementation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from cifake_mlflow.evaluation import metrics

#: Scores are clipped this far from 0 and 1 before taking logits (float32 sigmoid saturates).
EPS = 1e-7
#: Search range of the temperature; a fit at either end is reported, not trusted silently.
T_RANGE = (0.05, 20.0)


def logit(scores: np.ndarray) -> np.ndarray:
    """Inverse sigmoid of prob_fake, clipped away from 0 and 1."""
    p = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """prob_fake after dividing the logit by ``temperature`` (1 returns the scores)."""
    if temperature == 1.0:
        return np.asarray(scores, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-logit(scores) / temperature))


def fit_temperature(labels: np.ndarray, scores: np.ndarray) -> float:
    """The temperature minimising binary log loss of ``scores`` on ``labels``."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    z = logit(scores).ravel()
    if len(np.unique(labels)) < 2:
        return 1.0

    def nll(log_t: float) -> float:
        q = z / np.exp(log_t)
        # log(1 + e^-q) for FAKE, log(1 + e^q) for REAL, computed stably.
        return float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -q, q))))

    found = minimize_scalar(nll, bounds=np.log(T_RANGE), method="bounded")
    return float(np.exp(found.x))


@dataclass(frozen=True)
class Calibration:
    """What the validation split decided: temperature, threshold and the ECE it changed."""

    temperature: float
    threshold: float
    ece_before: float
    ece_after: float
    target_fpr: float | None

    def metrics(self, prefix: str = "val_") -> dict[str, float]:
        """MLflow metrics: the fitted values and ECE before and after."""
        return {
            "temperature": self.temperature,
            "decision_threshold": self.threshold,
            f"{prefix}ece_uncalibrated": self.ece_before,
            f"{prefix}ece": self.ece_after,
        }


def calibrate(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    target_fpr: float | None = None,
    temperature_scaling: bool = True,
) -> Calibration:
    """Fit the temperature on raw validation ``scores``; choose the threshold after it.

    With ``target_fpr`` the threshold is the lowest one that calls at most that share of the
    validation REAL images FAKE; otherwise ``threshold`` is kept.
    """
    temperature = fit_temperature(labels, scores) if temperature_scaling else 1.0
    calibrated = apply_temperature(scores, temperature)
    if target_fpr is not None:
        threshold = metrics.threshold_at_fpr(labels, calibrated, target_fpr)
    return Calibration(
        temperature=temperature,
        threshold=float(threshold),
        ece_before=metrics.expected_calibration_error(labels, scores),
        ece_after=metrics.expected_calibration_error(labels, calibrated),
        target_fpr=target_fpr,
    )
