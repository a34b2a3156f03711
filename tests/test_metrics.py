"""Metrics: scikit-learn's report with FAKE as the positive class, flattened for MLflow."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score

from cifake_mlflow.evaluation import metrics
from cifake_mlflow.evaluation.metrics import (
    CLASS_NAMES,
    classification_table,
    confusion,
    flatten_table,
    predict_labels,
    roc_auc,
    text_report,
)

pytestmark = pytest.mark.fast  # unit tests: the fast lane (pytest -m fast)

ROWS = ("real", "fake", "macro_avg", "weighted_avg")
COLUMNS = ("precision", "recall", "f1_score", "support")


def random_case(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.clip(0.35 * labels + rng.random(n) * 0.65, 0, 1)
    return labels, scores


def test_class_names_order() -> None:
    assert CLASS_NAMES == ("REAL", "FAKE")


@pytest.mark.parametrize(("seed", "threshold"), [(0, 0.5), (1, 0.5), (2, 0.3), (3, 0.8)])
def test_table_matches_sklearn(seed: int, threshold: float) -> None:
    labels, scores = random_case(seed)
    table = classification_table(labels, scores, threshold)
    reference = classification_report(
        labels,
        (scores >= threshold).astype(int),
        target_names=["REAL", "FAKE"],
        output_dict=True,
        zero_division=0,
    )
    for key in ("REAL", "FAKE", "macro avg", "weighted avg"):
        assert table[key] == pytest.approx(reference[key]), key
    assert table["accuracy"] == pytest.approx(reference["accuracy"])
    assert table["FAKE"]["support"] == labels.sum()
    assert table["REAL"]["support"] == len(labels) - labels.sum()
    assert table["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert table["threshold"] == threshold


def test_table_with_one_predicted_class() -> None:
    """Everything predicted REAL: FAKE's precision is 0 (not a warning or NaN)."""
    labels = np.array([0, 1, 0, 1, 1])
    scores = np.full(5, 0.1)
    table = classification_table(labels, scores)
    assert table["FAKE"]["precision"] == 0
    assert table["FAKE"]["recall"] == 0
    assert table["REAL"]["recall"] == 1
    assert table["accuracy"] == pytest.approx(2 / 5)


@pytest.mark.parametrize("seed", [0, 5])
def test_roc_auc_matches_sklearn(seed: int) -> None:
    labels, scores = random_case(seed)
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert roc_auc(labels.reshape(-1, 1), scores.reshape(-1, 1)) == pytest.approx(
        roc_auc_score(labels, scores)
    )
    tied = np.round(scores, 1)  # many ties: each tied REAL/FAKE pair counts one half
    assert roc_auc(labels, tied) == pytest.approx(roc_auc_score(labels, tied), abs=1e-12)


@pytest.mark.parametrize("only", [0, 1])
def test_roc_auc_is_nan_with_one_class(only: int) -> None:
    labels = np.full(10, only)
    scores = np.linspace(0, 1, 10)
    assert math.isnan(roc_auc(labels, scores))
    assert math.isnan(classification_table(labels, scores)["roc_auc"])


def test_predict_labels_uses_greater_or_equal() -> None:
    scores = np.array([0.0, 0.49, 0.5, 0.51, 1.0])
    np.testing.assert_array_equal(predict_labels(scores), [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(predict_labels(scores, threshold=0.51), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(predict_labels(scores.reshape(-1, 1)), [0, 0, 1, 1, 1])
    assert predict_labels(scores).dtype.kind == "i"


def test_hand_computed_case() -> None:
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.9])
    # predicted [0, 1, 0, 1]: one hit and one miss per class
    table = classification_table(labels, scores)
    assert table["accuracy"] == pytest.approx(0.5)
    assert table["FAKE"]["precision"] == pytest.approx(0.5)
    assert table["FAKE"]["recall"] == pytest.approx(0.5)
    assert table["REAL"]["precision"] == pytest.approx(0.5)
    # positive/negative pairs ranked right: (0.4>0.1), (0.9>0.1), (0.9>0.6) of 4
    assert table["roc_auc"] == pytest.approx(0.75)
    np.testing.assert_array_equal(confusion(labels, scores), [[1, 1], [1, 1]])


def test_confusion_rows_are_true_labels() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.7])  # one REAL called FAKE, all FAKE right
    np.testing.assert_array_equal(confusion(labels, scores), [[2, 1], [0, 2]])
    labels, scores = random_case(4)
    np.testing.assert_array_equal(
        confusion(labels, scores, 0.4), confusion_matrix(labels, scores >= 0.4, labels=[0, 1])
    )


def test_flatten_table_names() -> None:
    labels, scores = random_case(7)
    table = classification_table(labels, scores)
    flat = flatten_table(table)
    expected = {f"test_{row}_{col}" for row in ROWS for col in COLUMNS}
    expected |= {"test_accuracy", "test_roc_auc"}
    assert set(flat) == expected
    assert flat["test_accuracy"] == pytest.approx(table["accuracy"])
    assert flat["test_fake_precision"] == pytest.approx(table["FAKE"]["precision"])
    assert flat["test_real_recall"] == pytest.approx(table["REAL"]["recall"])
    assert flat["test_macro_avg_f1_score"] == pytest.approx(table["macro avg"]["f1-score"])
    assert flat["test_weighted_avg_support"] == len(labels)
    assert flat["test_roc_auc"] == pytest.approx(table["roc_auc"])
    assert all(isinstance(v, float) for v in flat.values())


def test_flatten_table_prefix() -> None:
    labels, scores = random_case(8)
    flat = flatten_table(classification_table(labels, scores), prefix="val_")
    assert all(key.startswith("val_") for key in flat)
    assert "val_fake_recall" in flat


def test_text_report() -> None:
    labels, scores = random_case(9)
    text = text_report(labels, scores, threshold=0.4)
    assert "REAL" in text and "FAKE" in text and "ROC-AUC" in text
    assert f"{roc_auc_score(labels, scores):.4f}" in text
    reference = classification_report(
        labels, (scores >= 0.4).astype(int), target_names=["REAL", "FAKE"], digits=4
    )
    assert reference in text


# -- detector metrics ---------------------------------------------------------------------------
def test_ece_matches_hand_computed_cases() -> None:
    # One image per bin: mean |label - score| = (0.1 + 0.2 + 0.2 + 0.1) / 4.
    assert metrics.expected_calibration_error([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (
        pytest.approx(0.15)
    )
    # One bin holding everything: |3/4 FAKE - mean score 0.5|.
    assert metrics.expected_calibration_error([1, 1, 1, 0], [0.5] * 4) == pytest.approx(0.25)
    # Perfectly calibrated bins give 0; scores of exactly 1.0 land in the last bin.
    assert metrics.expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_tpr_and_threshold_at_fixed_fpr_by_hand() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.95, 0.99]
    assert metrics.tpr_at_fpr(labels, scores, 0.0) == 0.5  # only 0.95 and 0.99 clear 0.9
    assert metrics.tpr_at_fpr(labels, scores, 0.25) == 1.0  # one REAL (0.9) may pass
    strict = metrics.threshold_at_fpr(labels, scores, 0.0)
    assert 0.9 < strict <= 0.95
    assert metrics.false_positive_rate(labels, scores, strict) == 0.0
    loose = metrics.threshold_at_fpr(labels, scores, 0.25)
    assert 0.3 < loose <= 0.4
    assert metrics.false_positive_rate(labels, scores, loose) == 0.25


def test_threshold_at_fpr_keeps_its_promise_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    for target in (0.01, 0.05, 0.2):
        t = metrics.threshold_at_fpr(labels, scores, target)
        assert metrics.false_positive_rate(labels, scores, t) <= target
        # The lowest such threshold: any REAL score just below it would break the promise.
        below = np.nextafter(np.max(scores[(labels == 0) & (scores < t)]), -np.inf)
        assert metrics.false_positive_rate(labels, scores, below) > target


def test_detector_metrics_agree_with_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, balanced_accuracy_score, log_loss

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.25), 0.001, 0.999)
    got = metrics.detector_metrics(labels, scores, threshold=0.5, resamples=0)
    assert got["pr_auc"] == pytest.approx(average_precision_score(labels, scores))
    assert got["log_loss"] == pytest.approx(log_loss(labels, scores))
    assert got["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels, (scores >= 0.5).astype(int))
    )
    assert "accuracy_ci_low" not in got


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_data() -> None:
    rng = np.random.default_rng(2)

    def interval(n: int) -> tuple[float, float, float]:
        labels = rng.integers(0, 2, n)
        scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1)
        low, high = metrics.bootstrap_ci(labels, scores, metrics.roc_auc, resamples=300)
        return low, metrics.roc_auc(labels, scores), high

    small, large = interval(200), interval(5000)
    assert small[0] < small[1] < small[2]
    assert large[0] < large[1] < large[2]
    assert large[2] - large[0] < (small[2] - small[0]) / 2
    got = metrics.detector_metrics([0, 1] * 100, [0.2, 0.7] * 100, resamples=50)
    assert got["accuracy_ci_low"] == got["accuracy_ci_high"] == 1.0
