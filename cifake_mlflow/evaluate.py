"""Score a split with a trained model and turn the scores into the reference report."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from cifake_mlflow import metrics


@dataclass
class Evaluation:
    """Scores and the report of one evaluated split."""

    labels: np.ndarray
    scores: np.ndarray  # prob_fake per image
    table: dict[str, object]  # scikit-learn report + roc_auc
    text: str
    threshold: float

    def flat(self, prefix: str = "test_") -> dict[str, float]:
        """Metric names for MLflow, e.g. ``test_accuracy``, ``test_fake_recall``."""
        return metrics.flatten_table(self.table, prefix)


def predict_scores(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """prob_fake for uint8 images (N, 32, 32, 3), in inference mode."""
    return model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0).ravel()


def evaluate(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, threshold: float = 0.5
) -> Evaluation:
    """Predict and report; FAKE (label 1) is the positive class."""
    scores = predict_scores(model, images)
    return Evaluation(
        labels=np.asarray(labels).ravel(),
        scores=scores,
        table=metrics.classification_table(labels, scores, threshold),
        text=metrics.text_report(labels, scores, threshold),
        threshold=threshold,
    )
