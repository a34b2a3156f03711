"""The logged detector: a pyfunc around a TensorFlow SavedModel, logged and loaded back.

The Keras file travels beside the SavedModel for warm starts, re-evaluation and Grad-CAM.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import mlflow
import numpy as np

import cifake_mlflow
from cifake_mlflow.evaluation.calibration import Calibration
from cifake_mlflow.modeling.mobilenet import export_saved_model
from cifake_mlflow.tracking.schema import signature

# Registers BudgetedCosineDecay, which the .keras file of a budgeted run names.
from cifake_mlflow.training import budget as _budget  # noqa: F401
from cifake_mlflow.training.config import TrainConfig

if TYPE_CHECKING:
    from cifake_mlflow.serving.pyfunc import CifakeDetector

MODEL_NAME_IN_RUN = "model"
#: The models-from-code file logged with each detector (a path: tracking does not import it).
MODEL_CODE = Path(cifake_mlflow.__file__).parent / "serving" / "model_code.py"


def keras_model_path(source: str) -> Path:
    """A local ``.keras`` file for ``source``: a file, or a logged detector's model URI."""
    local = Path(source).expanduser()
    if local.is_file():
        return local
    try:
        folder = Path(mlflow.artifacts.download_artifacts(source))
    except Exception as exc:
        raise ValueError(
            f"init_from={source!r}: not a file and not a model URI MLflow can load ({exc}). "
            "Give a .keras file, runs:/<run_id>/model or models:/<name>@<alias>."
        ) from None
    found = next(iter(folder.rglob("detector.keras")), None)
    if found is None:
        raise ValueError(f"init_from={source!r}: no detector.keras in that model")
    return found


def log_detector(model: keras.Model, cfg: TrainConfig, cal: Calibration | None = None) -> str:
    """Log the model as a pyfunc around a TensorFlow SavedModel; returns its model URI.

    The Keras file travels with it (artifact ``keras_model``) for warm starts and re-evaluation.
    The validation-fitted temperature and threshold (``cal``) go into the model config, where
    the served pyfunc reads them; without ``cal`` the model is uncalibrated at ``cfg.threshold``.
    """
    threshold = cal.threshold if cal is not None else cfg.threshold
    temperature = cal.temperature if cal is not None else 1.0
    package = Path(cifake_mlflow.__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        saved = export_saved_model(model, Path(tmp) / "saved_model")
        keras_file = Path(tmp) / "detector.keras"
        model.save(keras_file)
        with warnings.catch_warnings():
            # The explicit signature is the contract; MLflow's hints about type hints and
            # input examples do not apply to this model.
            warnings.filterwarnings("ignore", message=".*(type hint|input example).*")
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN,
                python_model=str(MODEL_CODE),
                artifacts={"saved_model": str(saved), "keras_model": str(keras_file)},
                code_paths=[str(package)],
                signature=signature(threshold),
                # MLflow also logs model_config as run params; "decision_threshold" keeps
                # clear of the run's own "threshold" param (the configured starting value).
                model_config={
                    "decision_threshold": threshold,
                    "temperature": temperature,
                    "image_size": cfg.image_size,
                },
                pip_requirements=_requirements(),
            )
    return info.model_uri


def _requirements() -> list[str]:
    """Pinned serving requirements (skips MLflow's slow requirement inference)."""
    import pandas
    import PIL
    import scipy
    import sklearn
    import tensorflow as tf

    return [
        f"mlflow=={mlflow.__version__}",
        f"tensorflow=={tf.__version__}",
        f"keras=={keras.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pandas.__version__}",
        f"pillow=={PIL.__version__}",
        f"scikit-learn=={sklearn.__version__}",  # calibration (temperature) uses metrics
        f"scipy=={scipy.__version__}",
    ]


@dataclass
class LoadedDetector:
    """A logged detector, loaded for evaluation and explanation.

    ``served`` is the pyfunc's own Python model (the code ``mlflow models serve`` runs, with its
    stored temperature and threshold); ``network`` is the same Keras model, for gradients.
    """

    uri: str
    served: CifakeDetector
    network: keras.Model
    run_id: str | None
    model_id: str | None


def load_detector(uri: str) -> LoadedDetector:
    """Load ``uri`` (runs:/, models:/name/version, models:/name@alias) both ways."""
    try:
        info = mlflow.models.get_model_info(uri)
        pyfunc_model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise ValueError(
            f"model_uri={uri!r}: MLflow cannot load it ({exc}). Give runs:/<run_id>/model, "
            "models:/<name>/<version> or models:/<name>@<alias> from this tracking server."
        ) from None
    served = pyfunc_model.unwrap_python_model()
    if type(served).__name__ != "CifakeDetector":
        raise ValueError(f"model_uri={uri!r} is not a cifake detector ({type(served).__name__})")
    return LoadedDetector(
        uri=uri,
        served=served,
        network=keras.models.load_model(keras_model_path(uri)),
        run_id=info.run_id,
        model_id=getattr(info, "model_id", None),
    )
