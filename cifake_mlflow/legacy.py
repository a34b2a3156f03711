"""Module names of the flat layout (before 2026-12-03), for models logged with it.

A detector logged by the flat-layout code is a pickled ``cifake_mlflow.pyfunc.CifakeDetector``.
Loaded in a process where today's package is already imported (``cifake compare``,
``cifake evaluate``, the registry gate), unpickling imports ``cifake_mlflow.pyfunc``; this
finder answers such names with today's module, so old runs and registered versions keep
loading. (``mlflow models serve`` loads the package logged beside the model and needs none.)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

#: flat-layout module -> where its code lives now.
MOVED = {
    "cifake_mlflow.pyfunc": "cifake_mlflow.serving.pyfunc",
    "cifake_mlflow.payload": "cifake_mlflow.serving.payload",
    "cifake_mlflow.preprocess": "cifake_mlflow.data.decode",
    "cifake_mlflow.calibration": "cifake_mlflow.evaluation.calibration",
    "cifake_mlflow.model": "cifake_mlflow.modeling.mobilenet",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Already executed under its new name."""


class _MovedModules(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(MOVED[fullname]))


def install() -> None:
    """Answer the flat-layout names (called when the package is imported)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
