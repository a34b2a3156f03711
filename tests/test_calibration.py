"""Temperature scaling and the validation-chosen threshold."""

from __future__ import annotations

import numpy as np
import pytest

from cifake_mlflow.evaluation import calibration, metrics

pytestmark = pytest.mark.fast  # unit tests: the fast lane (pytest -m fast)


def over_confident(n: int = 4000, sharpen: float = 3.0, seed: int = 0):
    """Labels drawn from true probabilities, and scores whose logits are ``sharpen`` x too big."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.02, 0.98, n)
    labels = (rng.random(n) < truth).astype(np.int64)
    scores = 1 / (1 + np.exp(-sharpen * calibration.logit(truth)))
    return labels, scores


def test_temperature_scaling_repairs_an_over_confident_model() -> None:
    labels, scores = over_confident()
    temperature = calibration.fit_temperature(labels, scores)
    assert temperature == pytest.approx(3.0, rel=0.15)
    fixed = calibration.apply_temperature(scores, temperature)
    before = metrics.expected_calibration_error(labels, scores)
    after = metrics.expected_calibration_error(labels, fixed)
    assert before > 0.1 and after < before / 3
    # Ranking and the 0.5 decision are untouched.
    assert metrics.roc_auc(labels, fixed) == pytest.approx(metrics.roc_auc(labels, scores))
    assert np.array_equal(fixed >= 0.5, scores >= 0.5)


def test_a_calibrated_model_keeps_a_temperature_near_one() -> None:
    labels, scores = over_confident(sharpen=1.0, seed=1)
    assert calibration.fit_temperature(labels, scores) == pytest.approx(1.0, abs=0.15)
    np.testing.assert_allclose(calibration.apply_temperature(scores, 1.0), scores, atol=1e-9)


def test_calibrate_picks_the_threshold_after_the_temperature() -> None:
    labels, scores = over_confident(seed=2)
    cal = calibration.calibrate(labels, scores, target_fpr=0.05)
    calibrated = calibration.apply_temperature(scores, cal.temperature)
    assert metrics.false_positive_rate(labels, calibrated, cal.threshold) <= 0.05
    assert cal.ece_after < cal.ece_before
    kept = calibration.calibrate(labels, scores, threshold=0.3, temperature_scaling=False)
    assert (kept.threshold, kept.temperature) == (0.3, 1.0)
    assert set(cal.metrics()) == {
        "temperature",
        "decision_threshold",
        "val_ece",
        "val_ece_uncalibrated",
    }
