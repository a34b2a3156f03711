"""Commands that look at trained models: evaluate, explain, compare."""

from __future__ import annotations

import click

from cifake_mlflow import CHAMPION_URI
from cifake_mlflow.cli.options import (
    build_config,
    open_output,
    options_for,
)
from cifake_mlflow.evaluation.config import EvalConfig


@click.command()
@options_for(EvalConfig)
def evaluate(**options: str | None) -> None:
    """Evaluate a logged model on a dataset split and log everything to one MLflow run.

    Logs the reference table, ROC-AUC, PR-AUC, balanced accuracy, log loss, ECE, TPR at 1% and
    5% FPR with bootstrap 95% intervals; the same on test images that are not copies of train
    images (test_dedup_*); the plots; a robustness suite (skip: --robustness false);
    and a Grad-CAM grid. The model's stored temperature and threshold are used. A registered
    version (models:/NAME/VERSION or models:/NAME@ALIAS) gets the results on its model card.

    
      cifake evaluate --model-uri models:/cifake-detector@champion --data PATH
      cifake evaluate --model-uri runs:/<run_id>/model --data test.zip --max-images 2000
    """
    from cifake_mlflow import registry, tracking
    from cifake_mlflow.data.dataset import DataError
    from cifake_mlflow.evaluation.run import evaluate_model

    cfg = build_config(options, EvalConfig)
    tracking.tracking_uri()
    try:
        summary = evaluate_model(cfg)
    except (DataError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    version = registry.attach_evaluation(cfg.model_uri, summary.run_id)
    if version is not None:
        click.echo(f"model card of {version[0]} v{version[1]} updated with this evaluation")
    click.echo(f"evaluation run {summary.run_id}")


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model-uri",
    default=CHAMPION_URI,
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
    from cifake_mlflow.evaluation.gradcam import explain_files

    tracking.tracking_uri()
    try:
        written = explain_files([Path(p) for p in images], model_uri, Path(out_dir))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for row in written:
        click.echo(f"{row.source}\t{row.prob_fake:.4f}\t{row.label}\t{row.png}")


@click.command()
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
    from cifake_mlflow import tracking
    from cifake_mlflow.tracking import compare as cmp

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
