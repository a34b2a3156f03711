"""Pure functions of (labels, scores) -> the numbers a run reports.

FAKE (label 1) is the positive class; REAL is label 0. The reference design's table is
scikit-learn's classification report with both classes, which :func:`classification_table`
reproduces and flattens into MLflow metric names.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score

CLASS_NAMES = ("REAL", "FAKE")


def predict_labels(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """FAKE (1) where ``prob_fake >= threshold``."""
    return (np.asarray(scores).ravel() >= threshold).astype(np.int64)


def classification_table(
    labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> dict[str, object]:
    """scikit-learn's report (per class, accuracy, macro and weighted averages) plus ROC-AUC."""
    labels = np.asarray(labels).ravel().astype(np.int64)
    predicted = predict_labels(scores, threshold)
    report = classification_report(
        labels,
        predicted,
        labels=[0, 1],
        target_names=list(CLASS_NAMES),
        output_dict=True,
        zero_division=0,
    )
    report["roc_auc"] = roc_auc(labels, scores)
    report["threshold"] = threshold
    return report


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC, or NaN when only one class is present."""
    labels = np.asarray(labels).ravel()
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores).ravel()))


def flatten_table(table: dict[str, object], prefix: str = "test_") -> dict[str, float]:
    """``{"test_accuracy": .., "test_fake_precision": .., "test_macro_avg_f1": ..}``."""
    flat: dict[str, float] = {}
    for key, value in table.items():
        name = key.lower().replace(" ", "_").replace("-", "_")
        if isinstance(value, dict):
            for metric, number in value.items():
                flat[f"{prefix}{name}_{metric.replace('-', '_')}"] = float(number)
        elif key != "threshold":
            flat[f"{prefix}{name}"] = float(value)
    return flat


def text_report(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> str:
    """The reference design's table as scikit-learn prints it, with ROC-AUC appended."""
    labels = np.asarray(labels).ravel().astype(np.int64)
    text = classification_report(
        labels,
        predict_labels(scores, threshold),
        labels=[0, 1],
        target_names=list(CLASS_NAMES),
        digits=4,
        zero_division=0,
    )
    return f"{text}\nROC-AUC: {roc_auc(labels, scores):.4f}   threshold: {threshold:g}\n"


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """2x2 counts, rows = true (REAL, FAKE), columns = predicted."""
    return confusion_matrix(
        np.asarray(labels).ravel(), predict_labels(scores, threshold), labels=[0, 1]
    )
