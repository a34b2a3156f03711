"""Score a split with a trained model and turn the scores into the reports a detector needs.

:func:`evaluate` makes one :class:`Evaluation` (the reference table plus ranking, calibration,
operating-point and bootstrap metrics) from scores; :func:`robustness_report` re-scores the
same images after each everyday transformation. Both are pure of MLflow: ``tracking`` logs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from cifake_mlflow.data import perturbations
from cifake_mlflow.evaluation import calibration, metrics

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass
class Evaluation:
    """Scores and the report of one evaluated split."""

    labels: np.ndarray
    scores: np.ndarray  # calibrated prob_fake per image
    table: dict[str, object]  # scikit-learn report + roc_auc + detector metrics
    text: str
    threshold: float
    temperature: float = 1.0
    raw_scores: np.ndarray | None = field(default=None, repr=False)

    def flat(self, prefix: str = "test_") -> dict[str, float]:
        """Metric names for MLflow, e.g. ``test_accuracy``, ``test_fake_recall``, ``test_ece``."""
        return metrics.flatten_table(self.table, prefix)


def predict_scores(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Uncalibrated prob_fake for uint8 images (N, 32, 32, 3), in inference mode."""
    return model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0).ravel()


def report(
    labels: np.ndarray,
    raw_scores: np.ndarray,
    threshold: float = 0.5,
    temperature: float = 1.0,
    resamples: int = 1000,
) -> Evaluation:
    """The full report of already computed (uncalibrated) scores; FAKE (1) is positive."""
    labels = np.asarray(labels).ravel()
    scores = calibration.apply_temperature(raw_scores, temperature)
    table = metrics.classification_table(labels, scores, threshold)
    table.update(metrics.detector_metrics(labels, scores, threshold, resamples))
    if temperature != 1.0:
        table["ece_uncalibrated"] = metrics.expected_calibration_error(labels, raw_scores)
    text = metrics.text_report(labels, scores, threshold) + (
        f"ECE: {table['ece']:.4f}   PR-AUC: {table['pr_auc']:.4f}   "
        f"TPR at 1% FPR: {table['tpr_at_fpr_1pct']:.4f}   temperature: {temperature:.3f}\n"
    )
    return Evaluation(labels, scores, table, text, threshold, temperature, np.asarray(raw_scores))


def evaluate(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    threshold: float = 0.5,
    temperature: float = 1.0,
    resamples: int = 1000,
) -> Evaluation:
    """Predict with a Keras model and report (see :func:`report`)."""
    return report(labels, predict_scores(model, images), threshold, temperature, resamples)


def robustness_report(
    score: Scorer,
    images: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    names: Sequence[str] = perturbations.DEFAULT_SUITE,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Accuracy, ROC-AUC and REAL false-positive rate per transformation, at a frozen threshold.

    ``score`` maps uint8 images to calibrated prob_fake; the entry ``clean`` is the untouched
    images, so each row reads against it.
    """
    labels = np.asarray(labels).ravel()
    out: dict[str, dict[str, float]] = {}
    for name in ("clean", *names):
        if progress is not None:
            progress(name)
        changed = images if name == "clean" else perturbations.apply(name, images, seed)
        scores = score(changed)
        out[name] = {
            "accuracy": metrics.accuracy(labels, scores, threshold),
            "roc_auc": metrics.roc_auc(labels, scores),
            "fpr": metrics.false_positive_rate(labels, scores, threshold),
        }
    return out
