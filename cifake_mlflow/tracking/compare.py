"""Side-by-side tables of runs and registered versions, read from MLflow (``cifake compare``).

The README's results tables come from here, so the numbers in it are the logged ones, never
retyped. Each column is a run id, a ``runs:/<id>/...`` URI, a registered version
(``models:/<name>/<version>`` or ``models:/<name>@<alias>``, resolved to the run that logged
it), or ``reference`` (the reference design's published report).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from cifake_mlflow.data.perturbations import robust_names

#: The reference design's published test report (accuracy and per-class precision/recall).
REFERENCE = {
    "test_accuracy": 0.93,
    "test_real_precision": 0.96,
    "test_real_recall": 0.90,
    "test_fake_precision": 0.91,
    "test_fake_recall": 0.96,
}

#: (row label, metric key) in display order; train_minutes is derived from train_seconds.
#: Robustness rows are added after ``ROBUST_AFTER``: for each transformation any column has, in
#: the suite's order, test accuracy and ROC-AUC after it (``robust_<name>_*``, from
#: ``cifake evaluate``) and validation accuracy after it (``val_robust_<name>_accuracy``, from
#: ``--val-robustness``). ROC-AUC sits beside accuracy because a threshold tuned on clean
#: images can hide a ranking that survived the transformation.
ROWS = (
    ("test accuracy", "test_accuracy"),
    ("accuracy 95% CI low", "test_accuracy_ci_low"),
    ("accuracy 95% CI high", "test_accuracy_ci_high"),
    ("accuracy, test without exact train copies", "test_dedup_accuracy"),
    ("accuracy, leak-free test", "test_leakfree_accuracy"),
    ("test ROC-AUC", "test_roc_auc"),
    ("ROC-AUC 95% CI low", "test_roc_auc_ci_low"),
    ("ROC-AUC 95% CI high", "test_roc_auc_ci_high"),
    ("ROC-AUC, test without exact train copies", "test_dedup_roc_auc"),
    ("ROC-AUC, leak-free test", "test_leakfree_roc_auc"),
    ("test PR-AUC", "test_pr_auc"),
    ("balanced accuracy", "test_balanced_accuracy"),
    ("log loss", "test_log_loss"),
    ("ECE (15 bins)", "test_ece"),
    ("ECE before temperature scaling", "test_ece_uncalibrated"),
    ("FPR (REAL called FAKE)", "test_fpr"),
    ("TPR at 1% FPR", "test_tpr_at_fpr_1pct"),
    ("TPR at 5% FPR", "test_tpr_at_fpr_5pct"),
    ("REAL precision", "test_real_precision"),
    ("REAL recall", "test_real_recall"),
    ("REAL F1", "test_real_f1_score"),
    ("FAKE precision", "test_fake_precision"),
    ("FAKE recall", "test_fake_recall"),
    ("FAKE F1", "test_fake_f1_score"),
    # then the robustness rows of each transformation present
    ("temperature", "temperature"),
    ("decision threshold", "decision_threshold"),
    ("best val accuracy", "best_val_accuracy"),
    ("epochs run", "epochs_run"),
    ("training minutes", "train_minutes"),
)


ROBUST_AFTER = "test_fake_f1_score"
#: (row label, metric key) of one transformation's robustness rows.
ROBUST_ROWS = (
    ("accuracy after {}", "robust_{}_accuracy"),
    ("ROC-AUC after {}", "robust_{}_roc_auc"),
    ("val accuracy after {}", "val_robust_{}_accuracy"),
)


@dataclass(frozen=True)
class Column:
    """One compared item: its header and its metrics."""

    header: str
    metrics: dict[str, float]


def registered_version(ref: str) -> ModelVersion | None:
    """The registered version behind ``models:/<name>/<version>`` or ``@<alias>``, else None."""
    if not ref.startswith("models:/") or ref.startswith("models:/m-"):
        return None
    name_version = ref[len("models:/") :]
    client = MlflowClient()
    if "@" in name_version:
        name, alias = name_version.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, number = name_version.rsplit("/", 1)
    return client.get_model_version(name, number)


def run_id_of(ref: str) -> str:
    """The run behind a run id, ``runs:/`` URI or registered ``models:/`` version."""
    if ref.startswith("runs:/"):
        return ref[len("runs:/") :].split("/", 1)[0]
    version = registered_version(ref)
    if version is None:
        return ref
    if not version.run_id:
        raise ValueError(f"{ref}: this version was not logged by a run")
    return version.run_id


def column(ref: str) -> Column:
    """Resolve ``ref`` to a column; raises ValueError naming ``ref`` when it cannot.

    A registered version that `cifake evaluate` has evaluated (tag ``evaluation_run_id``), or an
    evaluation run itself, shows the training run's metrics overlaid with the evaluation run's
    (robustness, leak-free test), so epochs and training time sit beside the full evaluation.
    """
    if ref == "reference":
        return Column("reference design", dict(REFERENCE))
    try:
        run = mlflow.get_run(run_id_of(ref))
        version = registered_version(ref)
        evaluation = version.tags.get("evaluation_run_id") if version else None
        extra = mlflow.get_run(evaluation).data.metrics if evaluation else {}
        trained = run.data.tags.get("evaluated_run_id")
        if trained and not evaluation:  # an evaluation run: its model's training run beneath
            extra, run = run.data.metrics, mlflow.get_run(trained)
    except mlflow.exceptions.MlflowException as exc:
        raise ValueError(f"{ref}: not a run or registered model version ({exc.message})") from None
    metrics = {**run.data.metrics, **extra}
    if "train_seconds" in metrics:
        metrics["train_minutes"] = metrics["train_seconds"] / 60
    header = run.info.run_name or run.info.run_id[:8]
    if ref.startswith("models:/"):
        header = f"{ref[len('models:/') :]} ({header})"
    return Column(header, metrics)


def _cell(value: float | None, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key in ("epochs_run",):
        return f"{value:.0f}"
    if key == "train_minutes":
        return f"{value:.1f}"
    return f"{value:.4f}"


def row_keys(columns: list[Column]) -> list[tuple[str, str]]:
    """:data:`ROWS`, with one robustness row per transformation any column has."""
    names = robust_names(key for c in columns for key in c.metrics)
    found = [(label.format(n), key.format(n)) for n in names for label, key in ROBUST_ROWS]
    keys = list(ROWS)
    at = next(i for i, (_, key) in enumerate(keys) if key == ROBUST_AFTER) + 1
    return keys[:at] + found + keys[at:]


def rows(columns: list[Column]) -> list[list[str]]:
    """Header row, then one row per metric that at least one column has."""
    table = [["metric", *(c.header for c in columns)]]
    for label, key in row_keys(columns):
        values = [c.metrics.get(key) for c in columns]
        if any(v is not None for v in values):
            table.append([label, *(_cell(v, key) for v in values)])
    return table


def markdown(table: list[list[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(table[0]) + " |", "|" + " --- |" * len(table[0])]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines) + "\n"


def as_csv(table: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table)
    return buffer.getvalue()
