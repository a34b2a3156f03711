"""`cifake data`: inspect or download the CIFAKE dataset."""

from __future__ import annotations

import json

import click


@click.group()
def data() -> None:
    """Inspect or download the CIFAKE dataset."""


@data.command()
@click.argument("path", default="data")
@click.option("--cache-dir", default=None, help="decoded-image cache folder")
@click.option("--json", "as_json", is_flag=True, help="print the full report as JSON")
def inspect(path: str, cache_dir: str | None, as_json: bool) -> None:
    """Decode (and cache) PATH and report counts, bad files, resized images and duplicates."""
    from cifake_mlflow.data.dataset import DataError, load_dataset

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
    from cifake_mlflow.data.download import DownloadError
    from cifake_mlflow.data.download import download as fetch

    try:
        folder = fetch(dest)
    except DownloadError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"downloaded into {folder}; train with: cifake train --data {folder}")
