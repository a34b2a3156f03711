"""End to end on generated images: the CLI and `mlflow run` log everything a run promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, write_cifake
from mlflow.tracking import MlflowClient

from cifake_mlflow.cli import main
from cifake_mlflow.data.dataset import load_dataset
from cifake_mlflow.evaluation.calibration import apply_temperature
from cifake_mlflow.tracking.schema import frame
from cifake_mlflow.training.config import TrainConfig

EPOCH_METRICS = (
    "loss",
    "accuracy",
    "roc_auc",
    "val_loss",
    "val_accuracy",
    "val_roc_auc",
    "learning_rate",
    "epoch_time",
)
TEST_METRICS = (
    "test_accuracy",
    "test_roc_auc",
    "test_real_precision",
    "test_real_recall",
    "test_real_f1_score",
    "test_real_support",
    "test_fake_precision",
    "test_fake_recall",
    "test_fake_f1_score",
    "test_fake_support",
    "test_macro_avg_f1_score",
    "test_weighted_avg_precision",
)
ARTIFACTS = (
    "evaluation/classification_report.txt",
    "evaluation/classification_report.json",
    "evaluation/confusion_matrix.png",
    "evaluation/roc_curve.png",
    "evaluation/misclassified.png",
    "training/curves.png",
    "training/history.json",
    "data/report.json",
)
EXTRA_PARAMS = (
    "dataset_digest",
    "n_train",
    "n_val",
    "n_test",
    "weights_source",
    "trainable_base_layers",
    "tensorflow_version",
    "keras_version",
    "mlflow_version",
    "git_commit",
)


def only_run(experiment: str) -> mlflow.entities.Run:
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def assert_complete_run(run: mlflow.entities.Run, epochs: int) -> None:
    """Every param, metric, artifact, dataset and the model that a training run promises."""
    client = MlflowClient()
    assert run.info.status == "FINISHED"
    params = run.data.params
    for name in (*TrainConfig().to_params(), *EXTRA_PARAMS):
        assert name in params, name
    for name in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == list(range(1, epochs + 1)), name
    for name in TEST_METRICS:
        assert name in run.data.metrics, name
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert run.data.metrics["startup_seconds"] > 0.5  # imports, data, build, first step
    assert set(ARTIFACTS) <= artifact_paths(client, run.info.run_id)
    contexts = {
        tag.value
        for ds_input in run.inputs.dataset_inputs
        for tag in ds_input.tags
        if tag.key == "mlflow.data.context"
    }
    assert contexts == {"training", "validation", "testing"}
    assert all(len(d.dataset.digest) == 16 for d in run.inputs.dataset_inputs)
    assert run.data.tags["mlflow.runName"].startswith("mnv2-32px-none-u154")
    assert run.data.tags["model_uri"].startswith("models:/")


def assert_model_matches_keras(model_uri: str, images: np.ndarray) -> None:
    """The logged SavedModel pyfunc equals Keras predict (through the stored temperature), at
    batch size 1 and 64."""
    served = mlflow.pyfunc.load_model(model_uri)
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    reference = keras.models.load_model(local / "artifacts" / "detector.keras")
    raw = reference.predict(images.astype("float32"), verbose=0).ravel()
    expected = apply_temperature(raw, served.model_config["temperature"])
    batch = served.predict(frame(images))
    assert list(batch.columns) == ["prob_fake", "label", "threshold"]
    np.testing.assert_allclose(batch["prob_fake"], expected, atol=1e-5)
    singles = [served.predict(frame(images[i : i + 1]))["prob_fake"].item() for i in range(4)]
    np.testing.assert_allclose(singles, expected[:4], atol=1e-5)
    assert set(batch["label"]) <= {"REAL", "FAKE"}
    strict = served.predict(frame(images[:4]), params={"threshold": 0.0})
    assert set(strict["label"]) == {"FAKE"}


@pytest.fixture
def small_cifake(tmp_path: Path) -> Path:
    return write_cifake(tmp_path / "cifake", {"train": 80, "test": 32}, seed=1)


def test_cli_train_logs_a_complete_run(tracking: str, cache_dir: Path, small_cifake: Path) -> None:
    args = [
        "train",
        "--data",
        str(small_cifake),
        "--weights",
        "none",
        "--image-size",
        "32",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--experiment",
        "cli-test",
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = only_run("cli-test")
    assert_complete_run(run, epochs=2)
    assert run.data.params["epochs"] == "2"
    images = load_dataset(small_cifake, cache_dir).images[:64]
    assert_model_matches_keras(run.data.tags["model_uri"], images)
    experiment = mlflow.get_experiment_by_name("cli-test")
    assert experiment.artifact_location.endswith("mlruns/cli-test")


def test_mlflow_run_entry_point(tracking: str, cache_dir: Path, small_cifake: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(ROOT),
        "--env-manager",
        "local",
        "--experiment-name",
        "project-test",
        "-P",
        f"data={small_cifake}",
        "-P",
        "weights=none",
        "-P",
        "image_size=32",
        "-P",
        "epochs=1",
        "-P",
        "batch_size=16",
        "-P",
        "learning_rate=1e-3",
        # not declared in MLproject: passed through to `cifake train` as --shift 3
        "-P",
        "shift=3",
        "-P",
        "label_smoothing=0.05",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "CIFAKE_CACHE_DIR": str(cache_dir)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = only_run("project-test")
    assert_complete_run(run, epochs=1)
    assert run.data.params["learning_rate"] == "1e-3"  # as given to mlflow run, not re-logged
    assert run.data.params["image_size"] == "32"
    assert run.data.params["shift"] == "3"  # undeclared options arrive in the logged params
    assert run.data.params["label_smoothing"] == "0.05"
    # A fresh process: start-up ends within the run, before its last minute of training.
    assert run.data.metrics["startup_seconds"] < (run.info.end_time - run.info.start_time) / 1e3


def test_cli_refuses_bad_values_before_any_work(tracking: str, cifake_dir: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--data", str(cifake_dir), "--dropout", "-0.1"])
    assert result.exit_code == 2
    assert "invalid --dropout -0.1" in result.output
    assert not Path("mlflow.db").exists()  # refused before the store was even opened


def test_cli_reports_missing_data_clearly(tracking: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(main, ["train", "--data", str(missing), "--weights", "none"])
    assert result.exit_code == 1
    assert str(missing) in result.output
    assert "cifake data download" in result.output


def test_failed_training_marks_the_run_failed(
    tracking: str, cache_dir: Path, cifake_dir: Path
) -> None:
    """A crash mid-run leaves a FAILED run with what was logged so far, not a RUNNING one.

    That includes ``startup_seconds``, logged the moment the first step ended.
    """
    from cifake_mlflow.training.run import train_and_log

    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            raise RuntimeError("simulated crash")

    cfg = TrainConfig(
        data=str(cifake_dir),
        weights="none",
        image_size=32,
        epochs=3,
        batch_size=16,
        experiment="crash",
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_and_log(cfg, callbacks=[Boom()], verbose=0)
    run = only_run("crash")
    assert run.info.status == "FAILED"
    assert "dataset_digest" in run.data.params
    assert MlflowClient().get_metric_history(run.info.run_id, "loss")  # epoch 1 kept
    assert run.data.metrics["startup_seconds"] > 0.5


def test_data_inspect_reports_duplicates(tmp_path: Path, cache_dir: Path) -> None:
    root = write_cifake(tmp_path / "dups", 6)
    leaked = root / "train" / "FAKE" / "0000.jpg"
    (root / "test" / "FAKE" / "copy.jpg").write_bytes(leaked.read_bytes())
    result = CliRunner().invoke(main, ["data", "inspect", str(root)])
    assert result.exit_code == 0, result.output
    assert "1 shared by train and test" in result.output
    assert "train_fake" in result.output


def test_data_download_fails_fast_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network here (and no credentials anywhere): a clear message instead of a hang."""
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["data", "download", "--dest", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "Download it by hand" in result.output
