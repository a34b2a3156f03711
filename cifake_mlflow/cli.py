"""The ``cifake`` command line: one command per job, each a few lines over the library.

Training options are generated from :class:`~cifake_mlflow.config.TrainConfig`, so the CLI,
``mlflow run -P name=value`` and the config can never drift apart. Values are parsed as text
by the config itself (``--unfrozen-layers auto``, ``--augment false``), exactly as MLflow passes
them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from cifake_mlflow.config import ConfigError, EvalConfig, TrainConfig, TuneConfig, field_type

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _metavar(name: str, cls: type) -> str:
    base, choices = field_type(name, cls)
    if name in ("unfrozen_layers", "max_train_images", "max_test_images", "max_images"):
        return "INT|all" + ("|auto" if name == "unfrozen_layers" else "")
    if choices:
        return "[" + "|".join(choices) + "]"
    return {int: "INT", float: "FLOAT", bool: "BOOL"}.get(base, "TEXT")


def options_for(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add one ``--field-name`` (also ``--field_name``) option per field of config ``cls``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        defaults = {f.name: _shown(cls, f) for f in dataclasses.fields(cls)}
        for f in reversed(dataclasses.fields(cls)):
            names = [f"--{f.name.replace('_', '-')}"]
            if "_" in f.name:
                names.append(f"--{f.name}")
            func = click.option(
                *names,
                f.name,
                default=None,
                metavar=_metavar(f.name, cls),
                help=f"{f.metadata['help']}  [default: {defaults[f.name]}]",
            )(func)
        return func

    return decorate


def _shown(cls: type, f: dataclasses.Field) -> str:
    if cls is TrainConfig:
        return _train_defaults()[f.name]
    if f.default is None:
        return {"threshold": "model", "max_images": "all", "cache_dir": "auto"}.get(f.name, "auto")
    return str(f.default)


@functools.cache
def _train_defaults() -> dict[str, str]:
    """TrainConfig's defaults as the CLI shows them (built once: every option asks)."""
    return TrainConfig().to_params()


config_options = options_for(TrainConfig)


def build_config(values: dict[str, str | None], cls: type = TrainConfig) -> Any:
    """A config from option text; a bad value becomes a usage error naming it."""
    try:
        return cls.from_strings(values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def split_options(options: dict[str, str | None]) -> tuple[TrainConfig, TuneConfig]:
    """Training and tuning configs from one command's options."""
    tune_names = {f.name for f in dataclasses.fields(TuneConfig)}
    train = {k: v for k, v in options.items() if k not in tune_names}
    tune = {k: v for k, v in options.items() if k in tune_names}
    return build_config(train), build_config(tune, TuneConfig)


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
    except (DataError, WeightsUnavailableError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
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
    from cifake_mlflow.data import DataError
    from cifake_mlflow.model import WeightsUnavailableError
    from cifake_mlflow.registry import RegistryError
    from cifake_mlflow.tuning import TuningError, run_study

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


@main.command()
@click.argument("run_id")
@click.option("--model-name", default="cifake-detector", show_default=True)
@click.option(
    "--margin",
    default=0.0,
    show_default=True,
    type=float,
    help="a new version must beat the champion by this much to take 'champion'",
)
@click.option("--data", default=None, help="dataset for the gate (default: the run's data)")
def register(run_id: str, model_name: str, margin: float, data: str | None) -> None:
    """Register RUN_ID's model and gate it against the champion.

    Both models are scored on the validation split the run's own settings carve from the data
    (never the test split); the alias 'champion' moves only if the new version wins by MARGIN,
    otherwise the version becomes 'challenger'. The first version becomes champion.
    """
    import mlflow

    from cifake_mlflow import registry, tracking
    from cifake_mlflow.data import DataError
    from cifake_mlflow.workflow import prepare_data

    tracking.tracking_uri()
    try:
        run = mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise click.ClickException(f"no run {run_id}: {exc.message}") from None
    known = set(TrainConfig().to_params())
    values = {k: v for k, v in run.data.params.items() if k in known}
    if data:
        values["data"] = data
    cfg = build_config(values)
    try:
        model_uri = registry.logged_model_uri(run)
        ds, splits = prepare_data(cfg)
        decision = registry.register_and_gate(
            model_uri,
            model_name,
            ds.images[splits.val],
            ds.labels[splits.val],
            margin=margin,
            tags={"run_id": run_id, "dataset_digest": ds.digest},
            description=f"Registered from run {run_id} ({run.info.run_name}).",
            eval_digest=tracking.split_digest(ds, splits.val),
        )
    except (DataError, registry.RegistryError, KeyError, mlflow.exceptions.MlflowException) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{model_name} v{decision.version} -> {decision.alias}: {decision.reason}")


@main.command()
@click.option("--model-name", default="cifake-detector", show_default=True, help="registered model")
@click.option("--alias", default="champion", show_default=True, help="registry alias to serve")
@click.option("--model-uri", default=None, help="serve this URI instead (runs:/..., models:/...)")
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
@click.option("--port", default=5001, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1), help="uvicorn workers"
)
def serve(
    model_name: str, alias: str, model_uri: str | None, host: str, port: int, workers: int
) -> None:
    """Serve a registered detector with `mlflow models serve` (--env-manager local).

    POST base64 image files to /invocations in column "image"; see the README for the curl
    line. Each worker holds its own copy of the model (about 1 GB).
    """
    from cifake_mlflow import serving, tracking

    tracking.tracking_uri()
    uri = model_uri or serving.model_uri(model_name, alias)
    command = serving.serve_command(uri, host, port, workers)
    click.echo(f"serving {uri} at http://{host}:{port}/invocations", err=True)
    os.execvpe(command[0], command, serving.serve_env())


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--url", default=None, help="score through this running server (http://HOST:PORT)")
@click.option(
    "--model-uri",
    default="models:/cifake-detector@champion",
    show_default=True,
    help="without --url: load this model in-process",
)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 1024))
@click.option(
    "--threshold", default=None, type=click.FloatRange(0, 1), help="default: the model's own"
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default=None,
    help="default: from the output suffix (.jsonl), else csv",
)
@click.option("-o", "--output", default="-", show_default=True, help="file to write; - is stdout")
def predict(
    paths: tuple[str, ...],
    url: str | None,
    model_uri: str,
    batch_size: int,
    threshold: float | None,
    fmt: str | None,
    output: str,
) -> None:
    """Score image FILES_OR_FOLDERS: one row (path, prob_fake, label, error) per image.

    Folders are searched recursively for image files. A file that cannot be scored gets a row
    with an empty score and the reason in "error"; the others are unaffected.

    \b
      cifake predict photos/ --url http://127.0.0.1:5001 -o scores.csv
      cifake predict a.jpg b.png --model-uri models:/cifake-detector@champion --format jsonl
    """
    from cifake_mlflow import predict as job
    from cifake_mlflow.serving import ServingError

    files = job.find_images(paths)
    if not files:
        raise click.ClickException(f"no image files in {', '.join(paths)}")
    if url:
        scorer = job.http_scorer(url, threshold)
    else:
        from cifake_mlflow import tracking

        tracking.tracking_uri()
        try:
            scorer = job.local_scorer(model_uri, threshold)
        except Exception as exc:  # MLflow raises several types for a bad or missing URI
            raise click.ClickException(f"cannot load {model_uri}: {exc}") from None
    with open_output(output) as stream:
        writer = job.RowWriter(stream, job.format_for(output, fmt))
        try:
            for rows in job.predict_rows(files, scorer, batch_size):
                writer.write(rows)
        except ServingError as exc:
            raise click.ClickException(str(exc)) from None


@main.command("predict-spark")
@click.argument("inputs", nargs=-1, required=True, metavar="PATHS...")
@click.option("-o", "--output", required=True, help="output folder (local, hdfs://, s3://...)")
@click.option(
    "--model-uri", default="models:/cifake-detector@champion", show_default=True,
    help="any MLflow model URI; an alias is pinned to its version when the job starts",
)  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet",
              show_default=True)  # fmt: skip
@click.option("--master", default=None,
              help="Spark master (default: Spark's own configuration, else local[*])")  # fmt: skip
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 1024),
              help="files per model call inside each partition")  # fmt: skip
@click.option("--commit-every", default=20_000, show_default=True, type=click.IntRange(1),
              help="files per committed write: what a killed job can lose at most")  # fmt: skip
def predict_spark(
    inputs: tuple[str, ...],
    output: str,
    model_uri: str,
    fmt: str,
    master: str | None,
    batch_size: int,
    commit_every: int,
) -> None:
    """Score image files under PATHS on Apache Spark: one row per file in OUTPUT.

    PATHS are folders (searched recursively), files or globs that Spark can read. Rows are
    cifake predict's (path, prob_fake, label, error) plus model_version. A broken file gets
    its error in its row; the job goes on. Run again with the same PATHS and OUTPUT to score
    only the files not yet there (after a crash, or when new files arrived). Needs the Spark
    extra (pip install -e ".[spark]") and Java 17+; under spark-submit, the master is
    spark-submit's.

    \b
      cifake predict-spark photos/ -o scores.parquet
      cifake predict-spark 's3a://bucket/images/*/' -o s3a://bucket/scores --master yarn
    """
    try:
        from cifake_mlflow import spark_scoring as job
    except ImportError as exc:
        raise click.ClickException(
            f"{exc}; install the Spark extra: pip install -e '.[spark]'"
        ) from None
    from cifake_mlflow import tracking

    tracking.tracking_uri()
    spark = job.spark_session(master)
    try:
        summary = job.run_job(
            spark, list(inputs), output, model_uri, fmt, batch_size, commit_every, click.echo
        )
    except job.SparkJobError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(job.summary_line(summary))


@main.command()
@options_for(EvalConfig)
def evaluate(**options: str | None) -> None:
    """Evaluate a logged model on a dataset split and log everything to one MLflow run.

    Logs the reference table, ROC-AUC, PR-AUC, balanced accuracy, log loss, ECE, TPR at 1% and
    5% FPR with bootstrap 95% intervals; the same on test images that are not copies of train
    images (test_dedup_*); the plots; a robustness suite (skip: --robustness false);
    and a Grad-CAM grid. The model's stored temperature and threshold are used.

    
      cifake evaluate --model-uri models:/cifake-detector@champion --data ../shared/data
      cifake evaluate --model-uri runs:/<run_id>/model --data test.zip --max-images 2000
    """
    from cifake_mlflow import tracking
    from cifake_mlflow.data import DataError
    from cifake_mlflow.evaluation_run import evaluate_model

    cfg = build_config(options, EvalConfig)
    tracking.tracking_uri()
    try:
        summary = evaluate_model(cfg)
    except (DataError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"evaluation run {summary.run_id}")


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model-uri",
    default="models:/cifake-detector@champion",
    show_default=True,
    help="the detector to explain (runs:/<id>/model, models:/<name>/<version> or @<alias>)",
)
@click.option(
    "-o", "--out-dir", default="explanations", show_default=True, help="folder for the PNGs"
)
def explain(images: tuple[str, ...], model_uri: str, out_dir: str) -> None:
    """Write a Grad-CAM overlay PNG per IMAGE, titled with its prob_fake and label.

    Each image is brought to 32x32 exactly as the served model does; the heatmap shows the
    regions that pushed the model towards the label it gave.

    
      cifake explain photo.jpg fake.png --model-uri models:/cifake-detector@champion
    """
    from pathlib import Path

    from cifake_mlflow import tracking
    from cifake_mlflow.explain import explain_files

    tracking.tracking_uri()
    try:
        written = explain_files([Path(p) for p in images], model_uri, Path(out_dir))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for row in written:
        click.echo(f"{row.source}\t{row.prob_fake:.4f}\t{row.label}\t{row.png}")


@main.command()
@click.argument("refs", nargs=-1, required=True, metavar="RUN_OR_MODEL...")
@click.option(
    "--reference/--no-reference",
    default=True,
    show_default=True,
    help="add the reference design's published report as a column",
)
@click.option(
    "--format", "fmt", type=click.Choice(["markdown", "csv"]), default="markdown", show_default=True
)
@click.option("-o", "--output", default="-", show_default=True, help="file to write; - is stdout")
def compare(refs: tuple[str, ...], reference: bool, fmt: str, output: str) -> None:
    """Print a side-by-side table of the main metrics of runs and registered versions.

    RUN_OR_MODEL is a run id, runs:/<id>/model, models:/<name>/<version> or
    models:/<name>@<alias>. The README's results tables are made with this command.

    \b
      cifake compare models:/cifake-detector@champion 2c4b62ee77594a7db804c75cf85197c9
    """
    from cifake_mlflow import compare as cmp
    from cifake_mlflow import tracking

    tracking.tracking_uri()
    try:
        columns = [cmp.column(ref) for ref in refs]
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if reference:
        columns.append(cmp.column("reference"))
    table = cmp.rows(columns)
    with open_output(output) as stream:
        stream.write(cmp.markdown(table) if fmt == "markdown" else cmp.as_csv(table))


def open_output(output: str) -> Any:
    """``-`` is stdout (left open); anything else a file opened for CSV-safe writing."""
    if output == "-":
        return contextlib.nullcontext(sys.stdout)
    return open(output, "w", newline="", encoding="utf-8")


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
