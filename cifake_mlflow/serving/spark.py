"""Batch scoring on Apache Spark: image files anywhere Spark reads -> Parquet (or CSV) rows.

The same rows as ``cifake predict`` (``path, prob_fake, label, error``) plus ``model_version``,
computed by the same code: each Spark Python worker loads the registered pyfunc once and scores
its partitions' files with :func:`cifake_mlflow.predict.score_files`, in batches of
``batch_size`` (Spark's Arrow batch size). A broken or unsupported file becomes a row with its
error; it never fails the job.

Work is committed in chunks of ``commit_every`` files, each one Spark write appended to the
output. A re-run over the same input and output lists the paths the output already holds and
scores only the others, so a job killed halfway keeps every committed chunk and finishes the
rest. ``mlflow.pyfunc.spark_udf`` is not used: it fails the whole task on one bad file, and a
per-file error row needs the per-file fallback of ``score_files``.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from cifake_mlflow.serving.batch import FIELDS, IMAGE_SUFFIXES, Scorer, local_scorer, score_files

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_MASTER = "local[*]"
OUTPUT_FORMATS = ("parquet", "csv")
#: The output's columns: ``cifake predict``'s, then the model version that scored the row.
COLUMNS = (*FIELDS, "model_version")
OUTPUT_SCHEMA = "path string, prob_fake double, label string, error string, model_version string"
#: Hadoop glob of the suffixes ``cifake predict`` picks up in folders, in both cases.
_SUFFIX_WORDS = sorted({s[1:] for s in IMAGE_SUFFIXES} | {s[1:].upper() for s in IMAGE_SUFFIXES})
IMAGE_GLOB = "*.{" + ",".join(_SUFFIX_WORDS) + "}"
_GLOB_CHARS = re.compile(r"([\\\[\]{}*?])")
#: Scorers of this Python worker process, by model folder: a model is loaded once per worker.
_SCORERS: dict[str, Scorer] = {}


class SparkJobError(RuntimeError):
    """The job cannot run as asked (no input, unreadable output, unknown model)."""


@dataclass
class JobSummary:
    """What one run of the job did."""

    model_uri: str
    model_version: str
    found: int
    skipped: int
    scored: int
    errors: int
    seconds: float


def spark_session(master: str | None = None, app_name: str = "cifake-predict") -> SparkSession:
    """A session on ``master``; else on Spark's own configured master (``spark-submit``,
    ``spark-defaults.conf``), else on ``local[*]``."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    elif not SparkConf().contains("spark.master"):
        builder = builder.master(DEFAULT_MASTER)
    return builder.getOrCreate()


def pinned_model(model_uri: str) -> tuple[str, str]:
    """``(uri of one fixed version, version label)``: an alias is resolved once, on the driver,
    so every executor scores the same version even if the alias moves during the job."""
    import mlflow

    match = re.fullmatch(r"models:/([^/@]+)@(.+)", model_uri)
    if match:
        name, alias = match.groups()
        try:
            version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
        except mlflow.exceptions.MlflowException as exc:
            raise SparkJobError(f"cannot resolve {model_uri}: {exc.message}") from None
        return f"models:/{name}/{version}", str(version)
    match = re.fullmatch(r"models:/([^/@]+)/(\d+)", model_uri)
    return model_uri, match.group(2) if match else model_uri


def list_images(spark: SparkSession, inputs: Sequence[str]) -> list[str]:
    """Image files under ``inputs`` (folders searched recursively, globs allowed), as Spark's
    paths, sorted. Only the listing is read here, not the files' bytes."""
    try:
        found = _binary_files(spark, inputs, recursive=True).select("path").collect()
    except Exception as exc:  # AnalysisException: a path that does not exist
        raise SparkJobError(f"cannot read {', '.join(inputs)}: {_first_line(exc)}") from None
    return sorted(row.path for row in found)


def already_scored(spark: SparkSession, output: str, fmt: str) -> set[str]:
    """Paths the output already holds rows for (empty when it does not exist yet)."""
    if not _exists(spark, output):
        return set()
    try:
        scores = _scores_reader(spark, fmt).load(output)
        return {row.path for row in scores.select("path").distinct().collect()}
    except Exception as exc:
        raise SparkJobError(
            f"{output} exists but cannot be read as {fmt} scores ({_first_line(exc)}); "
            "give a new output path, or the format it was written in"
        ) from None


def score_chunk(
    spark: SparkSession, paths: Sequence[str], model_dir: str, version: str
) -> DataFrame:
    """A DataFrame of ``COLUMNS`` rows for ``paths``, scored lazily on the executors."""
    files = _binary_files(spark, [_escape_glob(p) for p in paths], recursive=False)
    # Spark packs small files into partitions of about 32 (its 4 MB open cost per file): for
    # CIFAKE's 1 kB images that is a task, and a Python worker round trip, per 32 files.
    # One partition per core instead: each worker then scores long runs of full batches.
    files = files.coalesce(max(1, spark.sparkContext.defaultParallelism))
    return files.select("path", "content").mapInPandas(
        _partition_scorer(model_dir, version), schema=OUTPUT_SCHEMA
    )


def run_job(
    spark: SparkSession,
    inputs: Sequence[str],
    output: str,
    model_uri: str,
    fmt: str = "parquet",
    batch_size: int = 64,
    commit_every: int = 20_000,
    log: Callable[[str], None] = print,
) -> JobSummary:
    """Score every image file under ``inputs`` not yet in ``output``, chunk by chunk."""
    if fmt not in OUTPUT_FORMATS:
        raise SparkJobError(f"format={fmt!r}: choose one of {', '.join(OUTPUT_FORMATS)}")
    start = time.perf_counter()
    pinned, version = pinned_model(model_uri)
    found = list_images(spark, inputs)
    if not found:
        raise SparkJobError(
            f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {', '.join(inputs)}"
        )
    done = already_scored(spark, output, fmt)
    todo = [p for p in found if p not in done]
    log(f"{len(found):,} image files, {len(found) - len(todo):,} already in {output}, "
        f"{len(todo):,} to score with {pinned}")  # fmt: skip
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    # A chunk is read by its file paths; above this many, Spark lists them in a Spark job of
    # one task per path (17 s for 4,000 local files, against 1 s listed on the driver).
    spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.threshold", str(commit_every + 1))
    model_dir = ship_model(spark, pinned) if todo else ""
    scored = errors = 0
    for number, first in enumerate(range(0, len(todo), commit_every), start=1):
        chunk = todo[first : first + commit_every]
        rows = score_chunk(spark, chunk, model_dir, version).cache()
        writer = rows.write.mode("append").format(fmt)
        writer.option("header", True).save(output) if fmt == "csv" else writer.save(output)
        errors += rows.filter("error != ''").count()
        rows.unpersist()
        scored += len(chunk)
        log(f"chunk {number}: {scored:,}/{len(todo):,} files scored and committed "
            f"({scored / (time.perf_counter() - start):.0f} files/s so far)")  # fmt: skip
    return JobSummary(
        pinned, version, len(found), len(found) - len(todo), scored, errors,
        time.perf_counter() - start,
    )  # fmt: skip


def ship_model(spark: SparkSession, model_uri: str) -> str:
    """Download the model on the driver and ship it with the job (``SparkContext.addFile``):
    executors load it from their own copy, without reaching the tracking server."""
    import mlflow

    local = mlflow.artifacts.download_artifacts(model_uri, dst_path=tempfile.mkdtemp("-cifake"))
    spark.sparkContext.addFile(local, recursive=True)
    return Path(local).name


def _partition_scorer(
    model_dir: str, version: str
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = _worker_scorer(model_dir)
        for batch in batches:
            rows = score_files(list(batch["path"]), [bytes(c) for c in batch["content"]], scorer)
            frame = pd.DataFrame(rows, columns=list(FIELDS))
            frame["model_version"] = version
            yield frame

    return score_partition


def _worker_scorer(model_dir: str) -> Scorer:
    """The pyfunc scorer of this worker process, loaded on first use."""
    if model_dir not in _SCORERS:
        from pyspark import SparkFiles

        _SCORERS[model_dir] = local_scorer(SparkFiles.get(model_dir))
    return _SCORERS[model_dir]


def _binary_files(spark: SparkSession, paths: Sequence[str], recursive: bool) -> DataFrame:
    reader = spark.read.format("binaryFile").option("pathGlobFilter", IMAGE_GLOB)
    if recursive:
        reader = reader.option("recursiveFileLookup", True)
    return reader.load(list(paths))


def _exists(spark: SparkSession, path: str) -> bool:
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return bool(fs.exists(hadoop_path))


def _escape_glob(path: str) -> str:
    """A literal path for ``load``, which reads ``[``, ``{``, ``*`` and ``?`` as a glob."""
    return _GLOB_CHARS.sub(r"\\\1", path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def summary_line(summary: JobSummary) -> str:
    """The job's result in one line for the terminal."""
    return (
        f"scored {summary.scored:,} files ({summary.errors:,} with an error), skipped "
        f"{summary.skipped:,} already scored, with {summary.model_uri} in "
        f"{summary.seconds:.1f} s"
    )


def read_scores(spark: SparkSession, output: str, fmt: str = "parquet") -> Any:
    """The output as one pandas DataFrame (for checks and small outputs)."""
    return _scores_reader(spark, fmt).load(output).toPandas()


def _scores_reader(spark: SparkSession, fmt: str) -> Any:
    """A reader of the job's output in ``fmt`` (CSV: with its header and the output schema)."""
    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", True).schema(OUTPUT_SCHEMA)
    return reader
