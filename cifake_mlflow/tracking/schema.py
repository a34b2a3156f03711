"""The logged detector's contract: one input column, its size limit, the answer's columns.

These names are persisted in every logged model's signature and in every client; the serving
code (:mod:`cifake_mlflow.serving.payload`) checks each request against them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

#: The one input column of the served model.
COLUMN = "image"
#: Images per request; larger batches are refused (split them client-side).
MAX_BATCH = 1024


def frame(images: Any) -> pd.DataFrame:
    """The model input for in-process ``predict``: one ``image`` cell per array or file bytes."""
    return pd.DataFrame({COLUMN: list(images)})


def signature(threshold: float = 0.5) -> ModelSignature:
    """``image`` in; prob_fake, label, threshold out; threshold as a request param."""
    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), COLUMN)]),
        outputs=Schema(
            [
                ColSpec("double", "prob_fake"),
                ColSpec("string", "label"),
                ColSpec("double", "threshold"),
            ]
        ),
        params=ParamSchema([ParamSpec("threshold", "double", float(threshold))]),
    )
