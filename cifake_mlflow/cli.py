"""The ``cifake`` command line: one command per job, each a few lines over the library.

Training options are generated from :class:`~cifake_mlflow.config.TrainConfig`, so the CLI,
``mlflow run -P name=value`` and the config can never drift apart. Values are parsed as text
by the config itself (``--unfrozen-layers auto``, ``--augment false``), exactly as MLflow passes
them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from cifake_mlflow.config import ConfigError, TrainConfig, field_type

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _metavar(name: str) -> str:
    base, choices = field_type(name)
    if name in ("unfrozen_layers", "max_train_images", "max_test_images"):
        return "INT|all" + ("|auto" if name == "unfrozen_layers" else "")
    if choices:
        return "[" + "|".join(choices) + "]"
    return {int: "INT", float: "FLOAT", bool: "BOOL"}.get(base, "TEXT")


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add one ``--field-name`` (also ``--field_name``) option per TrainConfig field."""
    defaults = TrainConfig().to_params()
    for f in reversed(dataclasses.fields(TrainConfig)):
        shown = defaults[f.name]
        names = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            names.append(f"--{f.name}")
        func = click.option(
            *names,
            f.name,
            default=None,
            metavar=_metavar(f.name),
            help=f"{f.metadata['help']}  [default: {shown}]",
        )(func)
    return func


def build_config(values: dict[str, str | None]) -> TrainConfig:
    """TrainConfig from option text; a bad value becomes a usage error naming it."""
    try:
        return TrainConfig.from_strings(values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cifake-mlflow")
def main() -> None:
    """Detect AI-generated images (CIFAKE) with MobileNetV2, tracked in MLflow.

    The tracking store is sqlite:///mlflow.db in the working folder unless MLFLOW_TRACKING_URI
    is set; `mlflow ui --backend-store-uri sqlite:///mlflow.db` shows the runs.
    """


@main.command()
@config_options
def train(**options: str | None) -> None:
    """Train, evaluate on the test split and log one MLflow run.

    \b
    Quick CPU run on real CIFAKE (about 5 minutes on 2 cores):
      cifake train --data ../shared/data --weights none --image-size 32 --epochs 3
    """
    from cifake_mlflow.data import DataError
    from cifake_mlflow.model import WeightsUnavailableError
    from cifake_mlflow.workflow import train_and_log

    cfg = build_config(options)
    try:
        train_and_log(cfg)
    except (DataError, WeightsUnavailableError) as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def data() -> None:
    """Inspect or download the CIFAKE dataset."""


@data.command()
@click.argument("path", default="data")
@click.option("--cache-dir", default=None, help="decoded-image cache folder")
@click.option("--json", "as_json", is_flag=True, help="print the full report as JSON")
def inspect(path: str, cache_dir: str | None, as_json: bool) -> None:
    """Decode (and cache) PATH and report counts, bad files, resized images and duplicates."""
    from cifake_mlflow.data import DataError, load_dataset

    try:
        ds = load_dataset(path, cache_dir, on_bad_file="skip")
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    report = ds.report.to_dict()
    report["digest"] = ds.digest
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"dataset {path}  digest {ds.digest[:16]}")
    for key, count in ds.report.counts.items():
        click.echo(f"  {key:12s} {count:>8,}")
    click.echo(f"  bad files    {len(ds.report.bad_files):>8,}")
    for bad in ds.report.bad_files[:20]:
        click.echo(f"    {bad['path']}: {bad['reason']}")
    click.echo(f"  resized      {len(ds.report.resized_files):>8,}  (not 32x32, downscaled)")
    dup = ds.report.duplicates
    click.echo(
        f"  duplicates   {dup['groups']:>8,} groups ({dup['groups_within_train']} inside train, "
        f"{dup['groups_within_test']} inside test, {dup['train_test_shared']} shared by train "
        "and test; dropped from training by default)"
    )


@data.command()
@click.option("--dest", default="data", show_default=True, help="folder for the Kaggle archive")
def download(dest: str) -> None:
    """Download CIFAKE from Kaggle (needs network access and Kaggle credentials)."""
    from cifake_mlflow.download import DownloadError
    from cifake_mlflow.download import download as fetch

    try:
        folder = fetch(dest)
    except DownloadError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"downloaded into {folder}; train with: cifake train --data {folder}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
