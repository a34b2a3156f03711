"""Commands that serve and score: the HTTP server, batch files, Spark."""

from __future__ import annotations

import os

import click

from cifake_mlflow import CHAMPION_URI, MODEL_NAME
from cifake_mlflow.cli.options import (
    open_output,
)


@click.command()
@click.option("--model-name", default=MODEL_NAME, show_default=True, help="registered model")
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
    from cifake_mlflow import tracking
    from cifake_mlflow.serving import server

    tracking.tracking_uri()
    uri = model_uri or server.model_uri(model_name, alias)
    command = server.serve_command(uri, host, port, workers)
    click.echo(f"serving {uri} at http://{host}:{port}/invocations", err=True)
    os.execvpe(command[0], command, server.serve_env())


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--url", default=None, help="score through this running server (http://HOST:PORT)")
@click.option(
    "--model-uri",
    default=CHAMPION_URI,
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
    from cifake_mlflow.serving import batch as job
    from cifake_mlflow.serving.server import ServingError

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


@click.command("predict-spark")
@click.argument("inputs", nargs=-1, required=True, metavar="PATHS...")
@click.option("-o", "--output", required=True, help="output folder (local, hdfs://, s3://...)")
@click.option(
    "--model-uri", default=CHAMPION_URI, show_default=True,
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
        from cifake_mlflow.serving import spark as job
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
