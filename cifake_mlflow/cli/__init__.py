"""The ``cifake`` command line: one command per job, each a few lines over the library.

Commands live with the stage they drive (``training``, ``evaluation``, ``serving``, ``data``);
their options come from the configs (:mod:`cifake_mlflow.cli.options`).
"""

from __future__ import annotations

import sys

import click

from cifake_mlflow.cli.data import data
from cifake_mlflow.cli.evaluation import compare, evaluate, explain
from cifake_mlflow.cli.options import normalize_token
from cifake_mlflow.cli.serving import predict, predict_spark, serve
from cifake_mlflow.cli.training import quickstart, register, train, tune


@click.group(
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        "token_normalize_func": normalize_token,
    }
)
@click.version_option(package_name="cifake-mlflow")
def main() -> None:
    """Detect AI-generated images (CIFAKE) with MobileNetV2, tracked in MLflow.

    The tracking store is sqlite:///mlflow.db in the working folder unless MLFLOW_TRACKING_URI
    is set; `mlflow ui --backend-store-uri sqlite:///mlflow.db` shows the runs.
    """


for command in (
    quickstart,
    train,
    tune,
    register,
    evaluate,
    explain,
    compare,
    serve,
    predict,
    data,
):
    main.add_command(command)
main.add_command(predict_spark, "predict-spark")

__all__ = ["main", "serve"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
