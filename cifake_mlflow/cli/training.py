"""Commands that train: one run, a study, the quick start, and registering a run."""

from __future__ import annotations

import click

from cifake_mlflow import MODEL_NAME
from cifake_mlflow.cli.options import (
    build_config,
    config_options,
    options_for,
    split_options,
)
from cifake_mlflow.tuning.config import TuneConfig


@click.command()
@config_options
def train(**options: str | None) -> None:
    """Train, evaluate on the test split and log one MLflow run.

    \b
    Quick CPU run on real CIFAKE (about 5 minutes on 2 cores):
      cifake train --data PATH --weights none --image-size 32 --epochs 3
    """
    from cifake_mlflow.data.dataset import DataError
    from cifake_mlflow.modeling.mobilenet import WeightsUnavailableError
    from cifake_mlflow.training.run import train_and_log

    cfg = build_config(options)
    try:
        train_and_log(cfg)
    except (DataError, WeightsUnavailableError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@options_for(TuneConfig)
@config_options
def tune(**options: str | None) -> None:
    """Run (or resume) an Optuna study; each trial is a nested MLflow run; register the best.

    \b
    Trials sample the parameters declared in --search-space (tuning/search_space.yaml) on top
    of the training options given here. The study resumes when the same --study-name and
    --storage are used again; several workers can share a PostgreSQL storage:
      cifake tune --storage postgresql://postgres@127.0.0.1:5432/optuna --n-trials 20 ...
    """
    from cifake_mlflow.data.dataset import DataError
    from cifake_mlflow.modeling.mobilenet import WeightsUnavailableError
    from cifake_mlflow.registry.gate import RegistryError
    from cifake_mlflow.tuning.study import TuningError, run_study

    train_cfg, tune_cfg = split_options(options)
    try:
        result = run_study(train_cfg, tune_cfg)
    except (DataError, WeightsUnavailableError, TuningError, RegistryError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    best = result.best_trial
    if best is None:
        click.echo("no trial completed")
        return
    click.echo(f"best trial {best.number}: {tune_cfg.metric}={best.value:.4f} {best.params}")


@click.command()
@click.argument("run_id")
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@click.option(
    "--margin",
    default=0.0,
    show_default=True,
    type=float,
    help="a new version must beat the champion by this much to take 'champion'",
)
@click.option("--data", default=None, help="dataset for the gate (default: the run's data)")
@click.option(
    "--gate-metric",
    default="roc_auc",
    show_default=True,
    help="what the gate compares: roc_auc, accuracy, or robust_<transformation>_<roc_auc|"
    "accuracy> after one of cifake evaluate's transformations, e.g. robust_blur1_accuracy",
)
def register(
    run_id: str, model_name: str, margin: float, data: str | None, gate_metric: str
) -> None:
    """Register RUN_ID's model and gate it against the champion.

    Both models are scored on the validation split the run's own settings carve from the data
    (never the test split); the alias 'champion' moves only if the new version wins by MARGIN,
    otherwise the version becomes 'challenger'. The first version becomes champion.
    """
    import mlflow

    from cifake_mlflow import registry, tracking
    from cifake_mlflow.config import ConfigError
    from cifake_mlflow.data.dataset import DataError

    tracking.tracking_uri()
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise click.ClickException(f"no run {run_id}: {exc.message}") from None
    try:
        decision = registry.register_run(
            run_id, model_name, margin=margin, metric=gate_metric, data_path=data
        )
    except (DataError, ConfigError, registry.RegistryError, mlflow.exceptions.MlflowException) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{model_name} v{decision.version} -> {decision.alias}: {decision.reason}")


@click.command()
@click.option("--data", default="data", show_default=True, help="CIFAKE folder or archive(s)")
@click.option("--experiment", default="cifake", show_default=True, help="MLflow experiment")
@click.option("--storage", default="sqlite:///optuna.db", show_default=True, help="Optuna storage")
@click.option("--model-name", default=MODEL_NAME, show_default=True)
def quickstart(data: str, experiment: str, storage: str, model_name: str) -> None:
    """Train on the full split, run a 2-trial study, and register the better as champion.

    \b
    The training run is MobileNetV2 with the native-resolution stem at 32 px, 2 epochs
    (about 10 minutes on 2 CPU cores with the study); both it and the study's best trial go
    through the champion gate on the same validation images, so models:/cifake-detector@champion
    ends as the better one:
      cifake quickstart --data PATH
    """
    from cifake_mlflow import tracking
    from cifake_mlflow.data.dataset import DataError
    from cifake_mlflow.registry.gate import RegistryError
    from cifake_mlflow.tuning.quickstart import quickstart as run_quickstart
    from cifake_mlflow.tuning.space import TuningError

    tracking.tracking_uri()
    try:
        result = run_quickstart(data, experiment, storage, model_name)
    except (DataError, TuningError, RegistryError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    champion = result.champion
    if champion is not None:
        click.echo(f"champion: models:/{model_name}@champion = v{champion.version}")
