"""The MLflow pyfunc that wraps the exported TensorFlow SavedModel.

Loaded by ``mlflow.pyfunc.load_model`` and by ``mlflow models serve``. It answers each image
with ``prob_fake``, ``label`` (REAL or FAKE) and the threshold used; ``params={"threshold": t}``
overrides the threshold per request. Inputs are uint8 pixel batches (N, 32, 32, 3), which is
exactly what :func:`cifake_mlflow.preprocess.decode_image` produces from an image file.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from cifake_mlflow.preprocess import NATIVE_SIZE

#: Images per call into the SavedModel; bounds peak memory for large requests.
CHUNK = 256


def signature(threshold: float = 0.5) -> ModelSignature:
    """uint8 (N, 32, 32, 3) in; prob_fake, label, threshold out; threshold as a request param."""
    return ModelSignature(
        inputs=Schema(
            [TensorSpec(np.dtype(np.uint8), (-1, NATIVE_SIZE, NATIVE_SIZE, 3), "images")]
        ),
        outputs=Schema(
            [
                ColSpec("double", "prob_fake"),
                ColSpec("string", "label"),
                ColSpec("double", "threshold"),
            ]
        ),
        params=ParamSchema([ParamSpec("threshold", "double", float(threshold))]),
    )


def labelled(scores: np.ndarray, threshold: float) -> pd.DataFrame:
    """The answer table: one row per image."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    return pd.DataFrame(
        {
            "prob_fake": scores,
            "label": np.where(scores >= threshold, "FAKE", "REAL"),
            "threshold": np.full(len(scores), threshold),
        }
    )


def as_images(model_input: Any) -> np.ndarray:
    """The uint8 batch from what MLflow passes: a named-tensor dict or a bare array."""
    if isinstance(model_input, dict):
        model_input = model_input.get("images", next(iter(model_input.values()), None))
    images = np.asarray(model_input)
    if images.ndim != 4 or images.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE, 3):
        raise ValueError(
            f"expected uint8 images of shape (N, {NATIVE_SIZE}, {NATIVE_SIZE}, 3), "
            f"got shape {images.shape}"
        )
    return images.astype(np.uint8, copy=False)


class CifakeDetector(mlflow.pyfunc.PythonModel):
    """uint8 image batches -> SavedModel ``serve`` endpoint -> labelled prob_fake."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import tensorflow as tf

        self._saved = tf.saved_model.load(context.artifacts["saved_model"])
        self._threshold = float((context.model_config or {}).get("threshold", 0.5))

    # No type hints on predict: MLflow would try to derive a schema from them; the explicit
    # signature passed at logging time is the contract.
    def predict(self, context, model_input, params=None):
        threshold = float((params or {}).get("threshold", self._threshold))
        return labelled(self.scores(as_images(model_input)), threshold)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """prob_fake per image, in chunks of :data:`CHUNK`."""
        import tensorflow as tf

        out = [
            self._saved.serve(tf.constant(images[i : i + CHUNK])).numpy().ravel()
            for i in range(0, len(images), CHUNK)
        ]
        return np.concatenate(out) if out else np.zeros(0)
