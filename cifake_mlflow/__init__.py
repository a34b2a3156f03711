"""cifake-mlflow: an experiment-tracked MobileNetV2 detector of AI-generated images (CIFAKE)."""

__version__ = "0.1.0"

import time as _time

#: When this process imported the package (for ``cifake``, within ~0.1 s of process start);
#: runs log ``startup_seconds`` from here to their first training step.
STARTED = _time.time()

#: The registered model every command defaults to (a persisted name: clients and aliases use it).
MODEL_NAME = "cifake-detector"
#: The alias the registry gate gives the best version, and the default one to serve.
CHAMPION_ALIAS = "champion"
#: ``models:/cifake-detector@champion``.
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"

from cifake_mlflow import console as _console  # noqa: E402  (before TensorFlow loads)
from cifake_mlflow import legacy as _legacy  # noqa: E402

_console.install()
_legacy.install()
