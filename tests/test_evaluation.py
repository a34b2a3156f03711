"""`cifake evaluate`, `cifake explain`, calibration in training and serving: real TF + MLflow."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import module_store, write_cifake
from mlflow.tracking import MlflowClient
from PIL import Image

from cifake_mlflow import registry, tracking
from cifake_mlflow.cli import main
from cifake_mlflow.data import perturbations
from cifake_mlflow.evaluation import calibration, gradcam
from cifake_mlflow.evaluation.calibration import Calibration
from cifake_mlflow.modeling.mobilenet import build_model
from cifake_mlflow.tracking import compare
from cifake_mlflow.tracking.schema import frame
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.training.run import prepare_data, train_and_log

MODEL = "det"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A briefly trained, calibrated detector registered as det@champion; test data with a
    copy of one train image (a leak for the dedup report) and a mirrored one (a near-duplicate
    for the leak-free report)."""
    work = tmp_path_factory.mktemp("evaluation")
    with module_store(work):
        data = write_cifake(work / "cifake", {"train": 60, "test": 12}, seed=11)
        shutil.copy(data / "train/FAKE/0000.jpg", data / "test/FAKE/leak.jpg")
        original = Image.open(data / "train/REAL/0001.jpg")
        original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(data / "test/REAL/mirror.png")
        cfg = TrainConfig(
            data=str(data),
            weights="none",
            image_size=32,
            epochs=3,
            batch_size=16,
            target_fpr=0.1,
            robust_augment="jpeg50,crop0.875",
            experiment="eval-test",
        )
        summary = train_and_log(cfg, verbose=0)
        ds, splits = prepare_data(cfg)
        registry.register_and_gate(
            summary.model_uri, MODEL, ds.images[splits.val], ds.labels[splits.val]
        )
        yield {"work": work, "data": data, "cfg": cfg, "summary": summary, "ds": ds}


def test_training_calibrates_on_validation_and_the_model_carries_it(store: dict) -> None:
    run = mlflow.get_run(store["summary"].run_id)
    m = run.data.metrics
    for key in ("temperature", "decision_threshold", "val_ece", "val_ece_uncalibrated"):
        assert np.isfinite(m[key]), key
    for key in ("test_ece", "test_pr_auc", "test_tpr_at_fpr_1pct", "test_accuracy_ci_low"):
        assert key in m
    model = mlflow.pyfunc.load_model(store["summary"].model_uri)
    assert model.model_config["temperature"] == pytest.approx(m["temperature"])
    assert model.model_config["decision_threshold"] == pytest.approx(m["decision_threshold"])
    # --target-fpr 0.1: at most 10% of the validation REAL images are called FAKE.
    _, splits = prepare_data(store["cfg"])
    val = store["ds"].images[splits.val], store["ds"].labels[splits.val]
    said = model.predict(frame(val[0]))
    assert (said["label"][val[1] == 0] == "FAKE").mean() <= 0.1
    files = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/reliability.png", "evaluation/pr_curve.png"} <= files


def test_served_model_applies_the_stored_temperature_and_threshold(store: dict) -> None:
    network = tracking.load_detector(store["summary"].model_uri).network
    cal = Calibration(temperature=2.5, threshold=0.55, ece_before=0, ece_after=0, target_fpr=None)
    with mlflow.start_run(run_name="forced-calibration"):
        uri = tracking.log_detector(network, store["cfg"], cal)
    images = store["ds"].images[:24]
    raw = network.predict(images.astype(np.float32), verbose=0).ravel()
    served = mlflow.pyfunc.load_model(uri).predict(frame(images))
    expected = calibration.apply_temperature(raw, 2.5)
    assert np.allclose(served["prob_fake"], expected, atol=1e-5)
    assert not np.allclose(served["prob_fake"], raw, atol=1e-3)  # the temperature did something
    assert (served["threshold"] == 0.55).all()
    assert (served["label"] == np.where(expected >= 0.55, "FAKE", "REAL")).all()


def test_evaluate_logs_everything_in_one_run(store: dict) -> None:
    args = ["evaluate", "--model-uri", f"models:/{MODEL}@champion", "--data", str(store["data"])]
    result = CliRunner().invoke(main, [*args, "--bootstrap", "200", "--explain-samples", "3"])
    assert result.exit_code == 0, result.output
    run_id = result.output.strip().splitlines()[-1].split()[-1]
    run = mlflow.get_run(run_id)
    m, params = run.data.metrics, run.data.params
    for name in (
        "accuracy", "roc_auc", "pr_auc", "balanced_accuracy", "log_loss", "ece",
        "tpr_at_fpr_1pct", "tpr_at_fpr_5pct", "real_precision", "fake_recall",
        "macro_avg_f1_score", "weighted_avg_f1_score", "accuracy_ci_low", "roc_auc_ci_high",
    ):  # fmt: skip
        assert f"test_{name}" in m and f"test_dedup_{name}" in m, name
        assert f"test_leakfree_{name}" in m, name
    assert m["test_accuracy_ci_low"] <= m["test_accuracy"] <= m["test_accuracy_ci_high"]
    # The byte copy is left out of dedup, and the mirrored copy out of leak-free as well.
    assert (params["images"], params["dedup_images"]) == ("26", "25")
    assert (params["leakfree_images"], params["near_duplicate_distance"]) == ("24", "4")
    assert m["test_leakfree_real_support"] == m["test_real_support"] - 1
    assert "leak-free test (24 images" in result.output
    assert m["test_fake_support"] == 13 and m["test_dedup_fake_support"] == 12
    for name in perturbations.DEFAULT_SUITE:
        for metric in ("accuracy", "roc_auc", "fpr"):
            assert f"robust_{name}_{metric}" in m, (name, metric)
    artifacts = {
        a.path
        for folder in ("evaluation", "robustness", "explanations")
        for a in MlflowClient().list_artifacts(run_id, folder)
    }
    for png in (
        "evaluation/confusion_matrix.png",
        "evaluation/roc_curve.png",
        "evaluation/pr_curve.png",
        "evaluation/reliability.png",
        "evaluation/score_histograms.png",
        "robustness/summary.png",
        "explanations/gradcam_grid.png",
    ):
        assert png in artifacts, png
    version = MlflowClient().get_model_version_by_alias(MODEL, "champion")
    assert version.tags["evaluation_run_id"] == run_id
    # The version's model card now carries this evaluation: test, leak-free, robustness.
    card = version.description
    assert f"model card of {MODEL} v{version.version} updated" in result.output
    assert card.count("## Evaluation") == 1 and run_id in card
    assert f"| test accuracy | {m['test_accuracy']:.4f} |" in card
    assert (
        f"copies and near-copies of train images removed | {m['test_leakfree_accuracy']:.4f}"
        in card
    )
    for name in perturbations.DEFAULT_SUITE:
        assert f"| {name} (test) | {m[f'robust_{name}_accuracy']:.4f} |" in card, name
    assert card.index("Gate") < card.index("## Evaluation")  # what registration wrote stays
    assert run.data.tags["evaluated_run_id"] == store["summary"].run_id
    # Every row `cifake compare` knows is filled from what training and evaluation logged.
    table = CliRunner().invoke(main, ["compare", run_id, "--no-reference"]).output.splitlines()
    labels = [line.split(" | ")[0].removeprefix("| ") for line in table[2:]]
    assert set(labels) == {label for label, _ in compare.ROWS} | {
        label.format(name)
        for name in perturbations.DEFAULT_SUITE
        for label, key in compare.ROBUST_ROWS
        if not key.startswith("val_")  # this training ran without --val-robustness
    }


def test_evaluate_explains_a_bad_split_and_skips_robustness(store: dict) -> None:
    only_test = store["work"] / "only-test"
    shutil.copytree(store["data"] / "test", only_test / "test")
    args = ["evaluate", "--model-uri", f"models:/{MODEL}@champion", "--data", str(only_test)]
    result = CliRunner().invoke(main, [*args, "--split", "train"])
    assert result.exit_code != 0 and "no 'train' split" in result.output
    fast = [*args, "--robustness", "false", "--explain-samples", "0", "--bootstrap", "0"]
    result = CliRunner().invoke(main, fast)
    assert result.exit_code == 0, result.output
    run = mlflow.get_run(result.output.strip().splitlines()[-1].split()[-1])
    assert not any(k.startswith("robust_") for k in run.data.metrics)
    assert "unavailable" in run.data.tags["dedup"]
    # --train-data names where the training images are: the leak is found again.
    result = CliRunner().invoke(main, [*fast, "--train-data", str(store["data"])])
    assert result.exit_code == 0, result.output
    params = mlflow.get_run(result.output.strip().splitlines()[-1].split()[-1]).data.params
    assert (params["images"], params["dedup_images"]) == ("26", "25")
    assert params["leakfree_images"] == "24"
    bad = CliRunner().invoke(main, [*args, "--transforms", "jpeg500"])
    assert bad.exit_code != 0 and "invalid --transforms 'jpeg500'" in bad.output


def test_grad_cam_of_a_trained_model_is_an_input_sized_map(store: dict) -> None:
    network = keras.models.load_model(tracking.keras_model_path(store["summary"].model_uri))
    images = store["ds"].images[:12]
    maps = gradcam.grad_cam(network, images)
    assert maps.shape == (12, 32, 32)
    assert maps.min() >= 0 and maps.max() <= 1
    varied = np.ptp(maps.reshape(12, -1), axis=1) > 0
    assert varied.mean() >= 0.75, "Grad-CAM maps should not be constant"


def test_grad_cam_of_a_flip_tta_model_explains_the_image_as_given(store: dict) -> None:
    """The mirror view is skipped: same maps as the plain model with the same weights."""
    network = keras.models.load_model(tracking.keras_model_path(store["summary"].model_uri))
    tta = build_model(store["cfg"].replace(tta="flip"))
    tta.set_weights(network.get_weights())
    images = store["ds"].images[:6]
    maps = gradcam.grad_cam(tta, images)
    assert maps.shape == (6, 32, 32)
    np.testing.assert_allclose(maps, gradcam.grad_cam(network, images), atol=1e-5)


def test_explain_writes_an_overlay_per_image(store: dict) -> None:
    files = sorted((store["data"] / "test" / "FAKE").glob("*.jpg"))[:2]
    out = store["work"] / "explained"
    uri = f"models:/{MODEL}@champion"
    result = CliRunner().invoke(
        main, ["explain", *map(str, files), "--model-uri", uri, "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.strip().splitlines()[-2:]]
    served = mlflow.pyfunc.load_model(uri).predict(frame([f.read_bytes() for f in files]))
    for row, prob, label in zip(rows, served["prob_fake"], served["label"], strict=True):
        assert float(row[1]) == pytest.approx(prob, abs=1e-4) and row[2] == label
        png = Path(row[3])
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = store["work"] / "not-an-image.jpg"
    bad.write_bytes(b"nope")
    result = CliRunner().invoke(main, ["explain", str(bad), "--model-uri", uri, "-o", str(out)])
    assert result.exit_code != 0 and "not a readable image" in result.output
