"""``cifake compare``: tables read from a real sqlite MLflow store and registry."""

from __future__ import annotations

import mlflow
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cifake_mlflow.cli import main
from cifake_mlflow.tracking import compare

pytestmark = pytest.mark.fast  # unit tests: the fast lane (pytest -m fast)


def logged_run(name: str, accuracy: float, seconds: float) -> str:
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_metrics(
            {
                "test_accuracy": accuracy,
                "test_roc_auc": 0.99,
                "test_real_precision": 0.95,
                "epochs_run": 7,
                "train_seconds": seconds,
            }
        )
        return run.info.run_id


def test_runs_versions_and_reference_side_by_side(tracking: str) -> None:
    mlflow.set_experiment("compare-test")  # not whichever experiment an earlier test selected
    first = logged_run("first", 0.9575, 5730)
    second = logged_run("second", 0.9612, 3000)
    client = MlflowClient()
    client.log_metric(second, "val_robust_jpeg50_accuracy", 0.8905)  # from --val-robustness
    client.create_registered_model("det")
    client.create_model_version("det", f"runs:/{second}/model", run_id=second)
    client.set_registered_model_alias("det", "champion", "1")

    result = CliRunner().invoke(main, ["compare", first, "models:/det@champion"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "| metric | first | det@champion (second) | reference design |"
    assert "| test accuracy | 0.9575 | 0.9612 | 0.9300 |" in lines
    assert "| training minutes | 95.5 | 50.0 |  |" in lines
    assert "| epochs run | 7 | 7 |  |" in lines
    assert not any(line.startswith("| FAKE F1") for line in lines), "rows nobody has are left out"

    # Once `cifake evaluate` has tagged the version, its evaluation metrics join the column.
    with mlflow.start_run(run_name="evaluation") as evaluation:
        mlflow.set_tag("evaluated_run_id", second)
        mlflow.log_metrics(
            {
                "robust_noise0.05_accuracy": 0.7001,
                "robust_jpeg50_accuracy": 0.8811,
                "robust_jpeg50_fpr": 0.1,
                "robust_jpeg50_roc_auc": 0.9413,
                "test_accuracy": 0.9612,
                "test_roc_auc_ci_low": 0.9811,
            }
        )
    client.set_model_version_tag("det", "1", "evaluation_run_id", evaluation.info.run_id)
    table = CliRunner().invoke(main, ["compare", "models:/det@champion", "--no-reference"])
    lines = table.output.splitlines()
    robust = [line for line in lines if " after " in line]
    # each transformation's rows, in the suite's order (jpeg before noise); fpr is not a row,
    # and rows no column has are left out
    assert robust == [
        "| accuracy after jpeg50 | 0.8811 |",
        "| ROC-AUC after jpeg50 | 0.9413 |",
        "| val accuracy after jpeg50 | 0.8905 |",
        "| accuracy after noise0.05 | 0.7001 |",
    ]
    assert lines.index("| REAL precision | 0.9500 |") < lines.index(robust[0])
    assert lines.index(robust[-1]) < lines.index("| epochs run | 7 |")
    assert "| ROC-AUC 95% CI low | 0.9811 |" in lines
    assert "| epochs run | 7 |" in lines  # the training run's, kept
    # The evaluation run's id gives the same column: its metrics over its model's training run.
    by_run = CliRunner().invoke(main, ["compare", evaluation.info.run_id, "--no-reference"])
    assert by_run.output.splitlines()[1:] == lines[1:]

    as_csv = CliRunner().invoke(
        main, ["compare", f"runs:/{first}/model", "--no-reference", "--format", "csv"]
    )
    assert as_csv.output.splitlines()[:2] == ["metric,first", "test accuracy,0.9575"]


def test_unknown_reference_is_named(tracking: str) -> None:
    with pytest.raises(ValueError, match=r"^0+: not a run"):
        compare.column("0" * 32)
    result = CliRunner().invoke(main, ["compare", "models:/nothing/3"])
    assert result.exit_code == 1 and "models:/nothing/3" in result.output
