"""What a user sees on the console: progress and results, not the libraries' start-up noise.

- TensorFlow prints C++ log lines while it is imported (oneDNN, CUDA probing on machines
  without a GPU) and TensorFlow 2.19+ ignores ``TF_CPP_MIN_LOG_LEVEL`` for them
  (tensorflow/tensorflow#100442). Unless the user sets ``TF_CPP_MIN_LOG_LEVEL`` (then nothing is
  hidden), the import and the device probe run with the process's native stderr sent to a
  temporary file, which is replayed if they fail.
- MLflow draws a progress bar per artifact download; models are small, so the bars are off
  unless ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is set.
- Keras' own progress: a live bar on a terminal, one line per epoch otherwise (:func:`verbosity`).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

#: Set by the user: TensorFlow's native output is left alone.
USER_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """Send file descriptor 2 (what C++ libraries write to) to a temporary file meanwhile.

    A no-op when the user set ``TF_CPP_MIN_LOG_LEVEL``. If the block raises, what was
    written is replayed to stderr so that nothing needed to diagnose it is lost.
    """
    if os.environ.get(USER_LOG_LEVEL) is not None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not ok:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the normal way and runs its first import inside the quiet block."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once: later imports are cache hits anyway
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            with native_stderr_quiet():
                load(module)
                # The first device listing probes CUDA, which logs an error without a GPU.
                module.config.list_physical_devices()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


#: (message regex, category, why): warnings whose cause is upstream, filtered by message only.
UPSTREAM_WARNINGS = (
    (
        r".*(is an experimental feature|is experimental \(supported from)",
        Warning,
        # Optuna's ExperimentalWarning (a plain Warning) for features it has shipped for years:
        # trial heartbeats, fail_stale_trials and the matplotlib plots a study logs.
        "optuna ExperimentalWarning",
    ),
)


def install() -> None:
    """Called when the package is imported, before anything imports TensorFlow."""
    for message, category, _ in UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet = os.environ.get(USER_LOG_LEVEL) is None and "tensorflow" not in sys.modules
    if quiet and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def verbosity(stream: Any = None) -> int:
    """Keras' ``verbose``: 1 (a bar that moves within each epoch) on a terminal, else 2."""
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return 1 if isatty is not None and isatty() else 2
