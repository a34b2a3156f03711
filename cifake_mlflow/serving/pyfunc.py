"""The MLflow pyfunc that wraps the exported TensorFlow SavedModel.

Loaded by ``mlflow.pyfunc.load_model`` and by ``mlflow models serve``. Input is one column,
``image``: base64 image files or 32x32x3 uint8 arrays (see :mod:`cifake_mlflow.payload`). It
answers each image with ``prob_fake`` (temperature-calibrated), ``label`` (REAL or FAKE) and
the threshold used; ``params={"threshold": t}`` overrides the threshold per request. The
temperature and default threshold were fitted on the validation split and travel in the
model's config (see :mod:`cifake_mlflow.evaluation.calibration`).

The ``image`` column is typed ``Any``: MLflow checks that the column is there, and
:mod:`cifake_mlflow.payload` checks every item, naming the bad one. (A typed column cannot carry
both forms: MLflow's ``Array`` enforcement costs about 34 ms per 32x32x3 image, and a tensor
signature cannot hold base64 text.)
"""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from cifake_mlflow.evaluation.calibration import apply_temperature
from cifake_mlflow.serving.payload import ModelError, images_from, threshold_from

#: Images per call into the SavedModel; bounds peak memory for large requests.
CHUNK = 256
_log = logging.getLogger(__name__)


class ScoringFailed(ModelError):
    """An unexpected error while scoring: HTTP 500 with a one-line reply, the traceback logged.

    MLflow's scoring server would put the traceback, with the server's file paths, into the
    reply of any exception that is not an ``MlflowException``.
    """

    def __init__(self, exc: Exception) -> None:
        super().__init__(
            f"internal error while scoring ({type(exc).__name__}); the server log has the details",
            error_code=INTERNAL_ERROR,
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


class CifakeDetector(mlflow.pyfunc.PythonModel):
    """Request -> uint8 batch -> SavedModel ``serve`` endpoint -> labelled prob_fake."""

    # No type-hint validation: the ``image`` column holds base64 text or pixel arrays, which
    # no hint MLflow supports expresses; the signature logged with the model is the contract.
    # MLflow's own switch for this (checked in PythonModel.__init_subclass__) also stops its
    # warning for every PythonModel without hints (mlflow/mlflow#14235).
    _skip_type_hint_validation = True

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import tensorflow as tf

        config = context.model_config or {}
        self._saved = tf.saved_model.load(context.artifacts["saved_model"])
        # "threshold" is where models logged before calibration kept it.
        self._threshold = float(config.get("decision_threshold", config.get("threshold", 0.5)))
        # Fitted on validation at training time; 1.0 (no change) for models logged before it.
        self._temperature = float(config.get("temperature", 1.0))

    # No type hints on predict: MLflow would try to derive a schema from them; the explicit
    # signature passed at logging time is the contract.
    def predict(self, context, model_input, params=None):
        try:
            threshold = threshold_from(params, self._threshold)
            return labelled(self.scores(images_from(model_input)), threshold)
        except ModelError:
            raise
        except Exception as exc:
            _log.exception("scoring failed")
            raise ScoringFailed(exc) from None

    @property
    def threshold(self) -> float:
        """The decision threshold stored with the model."""
        return self._threshold

    @property
    def temperature(self) -> float:
        """The temperature stored with the model (1.0: uncalibrated)."""
        return self._temperature

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Calibrated prob_fake per uint8 image (N, 32, 32, 3)."""
        return apply_temperature(self.raw_scores(images), self._temperature)

    def raw_scores(self, images: np.ndarray) -> np.ndarray:
        """The SavedModel's own prob_fake, before temperature, in chunks of :data:`CHUNK`."""
        import tensorflow as tf

        out = [
            self._saved.serve(tf.constant(images[i : i + CHUNK])).numpy().ravel()
            for i in range(0, len(images), CHUNK)
        ]
        return np.concatenate(out) if out else np.zeros(0)
