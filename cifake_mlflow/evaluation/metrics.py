"""Pure functions of (labels, scores) -> the numbers a run reports.

FAKE (label 1) is the positive class; REAL is label 0. The reference design's table is
scikit-learn's classification report with both classes, which :func:`classification_table`
reproduces and flattens into MLflow metric names.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    log_loss,
    roc_curve,
)

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
    """ROC-AUC, or NaN when only one class is present.

    Computed as the Mann-Whitney statistic over average ranks (ties count half), which equals
    scikit-learn's ``roc_auc_score`` and costs one sort: a 1,000-resample bootstrap of 20,000
    test scores calls it 1,000 times.
    """
    labels = np.asarray(labels).ravel() == 1
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64).ravel())
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


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


# -- beyond the reference table: ranking, calibration, operating points, uncertainty ---------
#: Reliability bins for the expected calibration error (the issue's and the literature's 15).
ECE_BINS = 15
#: False-positive rates (REAL called FAKE) at which the true-positive rate is reported.
OPERATING_FPRS = (0.01, 0.05)


def expected_calibration_error(
    labels: np.ndarray, scores: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE of prob_fake: bin-weighted |observed FAKE share - mean prob_fake|.

    Equal-width bins over [0, 1] (the last one closed), the binary form used for detectors:
    a calibrated model's 0.8 means FAKE 80% of the time.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    which = np.clip((scores * bins).astype(np.int64), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        member = which == b
        if member.any():
            total += member.sum() * abs(labels[member].mean() - scores[member].mean())
    return float(total / max(1, len(scores)))


def reliability(
    labels: np.ndarray, scores: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: mean prob_fake, observed FAKE share and count (NaN where a bin is empty)."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    which = np.clip((scores * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(which, scores, bins) / counts
        observed = np.bincount(which, labels, bins) / counts
    return mean_score, observed, counts


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """Share of FAKE caught by the strictest threshold whose REAL false-positive rate <= ``fpr``.

    Read off the ROC curve without interpolation, so the promise "at most ``fpr`` of real photos
    flagged" holds on these images.
    """
    labels = np.asarray(labels).ravel()
    if len(np.unique(labels)) < 2:
        return float("nan")
    fprs, tprs, _ = roc_curve(labels, np.asarray(scores).ravel())
    return float(tprs[fprs <= fpr].max())


def threshold_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold whose REAL false-positive rate is at most ``fpr``.

    Used to choose the decision threshold on validation: prob_fake >= threshold says FAKE.
    """
    labels = np.asarray(labels).ravel()
    real = np.sort(np.asarray(scores, dtype=np.float64).ravel()[labels == 0])
    if len(real) == 0:
        raise ValueError("threshold_at_fpr needs REAL images to measure false positives on")
    allowed = int(np.floor(fpr * len(real)))  # REAL images that may score at/above it
    if allowed >= len(real):
        return 0.0
    # Just above the (allowed+1)-th highest REAL score, so at most `allowed` REAL pass.
    return float(np.nextafter(real[len(real) - allowed - 1], np.inf))


def false_positive_rate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Share of REAL images called FAKE at ``threshold``."""
    labels = np.asarray(labels).ravel()
    real = labels == 0
    if not real.any():
        return float("nan")
    return float(predict_labels(np.asarray(scores).ravel()[real], threshold).mean())


def bootstrap_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(labels, scores)`` over resampled images."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(labels), len(labels))
        value = statistic(labels[pick], scores[pick])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Share of images whose label is right at ``threshold``."""
    return float(np.mean(predict_labels(scores, threshold) == np.asarray(labels).ravel()))


def detector_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Everything past the reference table, as flat metric names (without a prefix).

    PR-AUC is average precision with FAKE positive; log loss clips scores as scikit-learn does;
    ``fpr`` is REAL called FAKE at ``threshold``; intervals are 95% percentile bootstraps.
    """
    labels = np.asarray(labels).ravel().astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    both = len(np.unique(labels)) == 2
    out = {
        "pr_auc": float(average_precision_score(labels, scores)) if both else float("nan"),
        "balanced_accuracy": float(
            balanced_accuracy_score(labels, predict_labels(scores, threshold))
        ),
        "log_loss": float(log_loss(labels, scores, labels=[0, 1])),
        "ece": expected_calibration_error(labels, scores),
        "fpr": false_positive_rate(labels, scores, threshold),
    }
    for fpr in OPERATING_FPRS:
        out[f"tpr_at_fpr_{round(fpr * 100)}pct"] = tpr_at_fpr(labels, scores, fpr)
    if resamples > 0:
        for name, stat in (
            ("accuracy", lambda y, s: accuracy(y, s, threshold)),
            ("roc_auc", roc_auc),
        ):
            low, high = bootstrap_ci(labels, scores, stat, resamples, seed=seed)
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    return out
