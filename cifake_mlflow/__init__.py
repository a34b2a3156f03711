"""cifake-mlflow: an experiment-tracked MobileNetV2 detector of AI-generated images (CIFAKE)."""

__version__ = "0.1.0"

import time as _time

#: When this process imported the package (for ``cifake``, within ~0.1 s of process start);
#: runs log ``startup_seconds`` from here to their first training step.
STARTED = _time.time()
