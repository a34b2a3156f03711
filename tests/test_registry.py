"""The champion/challenger gate on a real sqlite-backed MLflow Model Registry."""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_cifake
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from cifake_mlflow import registry, tracking
from cifake_mlflow.cli import main
from cifake_mlflow.modeling.mobilenet import build_model
from cifake_mlflow.registry.card import EVALUATION_HEADING, robustness_rows, with_evaluation
from cifake_mlflow.tracking.schema import MAX_BATCH, frame
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.training.run import prepare_data, train_and_log


@pytest.fixture
def trained(tracking: str, cache_dir: Path, tmp_path: Path) -> tuple[str, TrainConfig]:
    """One briefly trained detector (its run id) and its config."""
    data = write_cifake(tmp_path / "cifake", {"train": 60, "test": 16}, seed=3)
    cfg = TrainConfig(
        data=str(data),
        weights="none",
        image_size=32,
        epochs=3,
        batch_size=16,
        experiment="registry-test",
    )
    return train_and_log(cfg, verbose=0).run_id, cfg


def inverted_model_uri(run_id: str, cfg: TrainConfig) -> str:
    """The same detector with its output flipped (prob_fake -> 1 - prob_fake): ROC-AUC 1 - r."""
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model"))
    model = keras.models.load_model(folder / "artifacts" / "detector.keras")
    kernel, bias = model.get_layer("prob_fake").get_weights()
    model.get_layer("prob_fake").set_weights([-kernel, -bias])
    with mlflow.start_run(run_name="inverted"):
        return tracking.log_detector(model, cfg)


def ranking_labels(model_uri: str, images: np.ndarray) -> np.ndarray:
    """Labels that make the model's own ranking right: FAKE where prob_fake is above median.

    A detector trained for seconds on 120 synthetic images can sit at chance on its validation
    split (seen in CI: ROC-AUC 0.53), which would leave the gate nothing to tell apart. The gate
    only compares scores, so labels derived from the model give it a model that is good
    (ROC-AUC ~1) and, inverted, one that is bad (~0), on every run.
    """
    probs = mlflow.pyfunc.load_model(model_uri).predict(frame(images))["prob_fake"].to_numpy()
    assert np.ptp(probs) > 0, "precondition: the model does not answer a constant"
    return (probs > np.median(probs)).astype(np.int64)


def test_gate_promotes_only_a_better_version(trained: tuple[str, TrainConfig]) -> None:
    run_id, cfg = trained
    ds, splits = prepare_data(cfg)
    images = ds.images[splits.val]
    good_uri = mlflow.get_run(run_id).data.tags["model_uri"]
    labels = ranking_labels(good_uri, images)
    good = registry.score_model(good_uri, images, labels, "roc_auc")
    assert good > 0.9, "precondition: the model ranks its own labels almost perfectly"
    bad_uri = inverted_model_uri(run_id, cfg)
    worse, better = bad_uri, good_uri
    client = MlflowClient()

    first = registry.register_and_gate(worse, "det", images, labels)
    assert (first.alias, first.promoted, first.version) == (registry.CHAMPION, True, "1")

    second = registry.register_and_gate(
        better, "det", images, labels, tags={"k": "v"}, eval_digest="split-a"
    )
    assert second.promoted and second.alias == registry.CHAMPION
    assert str(client.get_model_version_by_alias("det", "champion").version) == "2"
    assert second.champion_score == pytest.approx(first.candidate_score)

    third = registry.register_and_gate(worse, "det", images, labels, eval_digest="split-b")
    assert "caution: the champion was gated on other images" in third.reason
    assert not third.promoted and third.alias == registry.CHALLENGER
    assert str(client.get_model_version_by_alias("det", "champion").version) == "2"
    assert str(client.get_model_version_by_alias("det", "challenger").version) == "3"
    version = client.get_model_version("det", "3")
    assert "does not beat champion v2" in version.tags["gate_reason"]
    assert "does not beat champion v2" in version.description
    assert client.get_model_version("det", "2").tags["k"] == "v"

    # The margin: an equal model does not displace the champion when a margin is required.
    fourth = registry.register_and_gate(
        better, "det", images, labels, margin=0.01, eval_digest="split-a"
    )
    assert fourth.alias == registry.CHALLENGER
    assert "caution" not in fourth.reason
    assert client.get_model_version("det", "2").tags["gate_split_digest"] == "split-a"
    champion = mlflow.pyfunc.load_model("models:/det@champion").predict(frame(images[:3]))
    assert list(champion.columns) == ["prob_fake", "label", "threshold"]
    assert np.isfinite(champion["prob_fake"]).all()


def test_model_without_champion_is_a_clear_error(tracking: str) -> None:
    with pytest.raises(registry.RegistryError, match="no 'champion' alias"):
        registry.champion_uri("never-registered")


def test_register_command_registers_a_run(trained: tuple[str, TrainConfig]) -> None:
    run_id, _ = trained
    result = CliRunner().invoke(main, ["register", run_id, "--model-name", "cli-det"])
    assert result.exit_code == 0, result.output
    assert "cli-det v1 -> champion" in result.output
    version = MlflowClient().get_model_version_by_alias("cli-det", "champion")
    assert version.tags["run_id"] == run_id
    missing = CliRunner().invoke(main, ["register", "0" * 32])
    assert missing.exit_code == 1
    assert "no run" in missing.output
    with mlflow.start_run(run_name="metrics-only") as bare:  # as a log_model=False run ends
        mlflow.log_params({"log_model": "False", "image_size": "32"})
    refused = CliRunner().invoke(main, ["register", bare.info.run_id])
    assert refused.exit_code == 1
    assert "logged no model (log_model=False)" in refused.output


def test_init_from_a_logged_run_warm_starts_training(
    trained: tuple[str, TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, cfg = trained
    summary = train_and_log(cfg.replace(init_from=f"runs:/{run_id}/model", epochs=1), verbose=0)
    assert "layers copied" in capsys.readouterr().out
    assert mlflow.get_run(summary.run_id).data.params["init_from"] == f"runs:/{run_id}/model"
    with pytest.raises(ValueError, match=r"init_from='runs:/0+/model'"):
        tracking.keras_model_path(f"runs:/{'0' * 32}/model")


@pytest.mark.usefixtures("tracking")
def test_scoring_a_validation_split_larger_than_one_request() -> None:
    """The gate scores in requests of MAX_BATCH: a full CIFAKE validation split is ~9,900."""
    cfg = TrainConfig(weights="none", image_size=32, threshold=0.5)
    model = build_model(cfg)
    mlflow.set_experiment("scoring-test")  # not whichever experiment an earlier test selected
    with mlflow.start_run(run_name="untrained"):
        uri = tracking.log_detector(model, cfg)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (MAX_BATCH + 77, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, len(images))
    raw = model.predict(images.astype(np.float32), verbose=0).ravel()
    assert registry.score_model(uri, images, labels, "roc_auc") == pytest.approx(
        roc_auc_score(labels, raw), abs=1e-4
    )
    assert registry.score_model(uri, images, labels, "accuracy") == pytest.approx(
        np.mean((raw >= 0.5) == labels), abs=2 / len(images)
    )


def cue_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images with two FAKE cues: a 1-pixel checkerboard (sharp, gone after a blur) and a
    brighter base (coarse, survives a blur but overlaps between the classes)."""
    labels = np.arange(n) % 2
    brightness = rng.normal(110, 13, size=(n, 1, 1, 1)) + 30 * labels[:, None, None, None]
    base = brightness + rng.normal(0, 20, size=(n, 4, 4, 3))
    images = np.kron(base, np.ones((1, 8, 8, 1))) + rng.normal(0, 4, size=(n, 32, 32, 3))
    checker = (np.indices((32, 32)).sum(axis=0) % 2) * 2 - 1
    images += 30 * labels[:, None, None, None] * checker[None, :, :, None]
    return np.clip(images, 0, 255).astype(np.uint8), labels


def cue_detector(cue: str) -> keras.Model:
    """A fixed-weight detector that reads one cue: ``sharp`` (mean absolute 2x2 checkerboard
    response) or ``coarse`` (mean brightness); sigmoid centred between the classes."""
    inputs = keras.Input((32, 32, 3))
    if cue == "sharp":
        conv = keras.layers.Conv2D(2, 2, activation="relu", use_bias=False)
        features = keras.layers.GlobalAveragePooling2D()(conv(inputs))
        weights, centre = np.array([[1.0], [1.0]]), 15.0  # |response| ~30 FAKE, ~2 REAL
    else:
        features = keras.layers.GlobalAveragePooling2D()(inputs)
        weights, centre = np.full((3, 1), 1 / 3), 125.0  # brightness ~110 REAL, ~140 FAKE
    head = keras.layers.Dense(1, activation="sigmoid", name="prob_fake")
    model = keras.Model(inputs, head(features))
    if cue == "sharp":
        kernel = np.array([[1.0, -1.0], [-1.0, 1.0]]) / 12  # 2x2 checkerboard, 3 channels
        kernel = np.stack([kernel, -kernel], axis=-1)[:, :, None, :].repeat(3, axis=2)
        conv.set_weights([kernel])
    head.set_weights([weights * 0.5, np.array([-0.5 * centre])])
    return model


@pytest.mark.usefixtures("tracking")
def test_gate_asked_for_robustness_takes_a_more_robust_slightly_less_accurate_challenger(
    capfd: pytest.CaptureFixture[str],
) -> None:
    images, labels = cue_images(400, np.random.default_rng(7))
    cfg = TrainConfig(weights="none", image_size=32, threshold=0.5)
    mlflow.set_experiment("robust-gate-test")
    uris = {}
    for cue in ("sharp", "coarse"):
        with mlflow.start_run(run_name=cue):
            uris[cue] = tracking.log_detector(cue_detector(cue), cfg)
    score = {
        (cue, metric): registry.score_model(uris[cue], images, labels, metric)
        for cue in uris
        for metric in ("accuracy", "robust_blur1_accuracy")
    }
    # Preconditions: the coarse detector is slightly less accurate on clean images and far more
    # accurate after a blur, which erases the checkerboard the sharp one reads.
    assert 0.8 < score["coarse", "accuracy"] < score["sharp", "accuracy"], score
    assert (
        score["sharp", "robust_blur1_accuracy"]
        < 0.6
        < 0.8
        < score["coarse", "robust_blur1_accuracy"]
    )

    first = registry.register_and_gate(uris["sharp"], "gated", images, labels, metric="accuracy")
    assert first.alias == registry.CHAMPION
    kept = registry.register_and_gate(uris["coarse"], "gated", images, labels, metric="accuracy")
    assert (kept.alias, kept.promoted) == (registry.CHALLENGER, False)
    robust = registry.register_and_gate(
        uris["coarse"], "gated", images, labels, metric="robust_blur1_accuracy"
    )
    assert (robust.alias, robust.promoted, robust.version) == (registry.CHAMPION, True, "3")
    assert robust.reason.startswith("robust_blur1_accuracy ")
    assert robust.champion_score == pytest.approx(score["sharp", "robust_blur1_accuracy"])
    version = MlflowClient().get_model_version("gated", "3")
    assert version.tags["gate_metric"] == "robust_blur1_accuracy"
    assert str(MlflowClient().get_model_version_by_alias("gated", "champion").version) == "3"
    assert version.source == uris["coarse"] and version.run_id  # as mlflow.register_model
    assert "registered model" not in capfd.readouterr().err.lower()  # MLflow's own lines


@pytest.mark.fast
def test_model_card_robustness_table_lists_test_then_validation_in_suite_order() -> None:
    metrics = {
        "val_robust_blur1_accuracy": 0.91,
        "robust_noise0.05_accuracy": 0.85,
        "robust_noise0.05_roc_auc": 0.96,
        "robust_blur1_accuracy": 0.65,
        "robust_blur1_roc_auc": 0.83,
    }
    assert robustness_rows(metrics) == [
        "| blur1 (test) | 0.6500 | 0.8300 |",
        "| blur1 (validation) | 0.9100 |  |",
        "| noise0.05 (test) | 0.8500 | 0.9600 |",
    ]


@pytest.mark.fast
def test_a_new_evaluation_replaces_the_cards_evaluation_section() -> None:
    card = "# det v1\n\n**Gate** (roc_auc): champion.\n\nGate: first version."
    first = with_evaluation(card, f"{EVALUATION_HEADING}\n\nrun `a`")
    assert first.startswith(card) and first.endswith("run `a`")
    second = with_evaluation(first, f"{EVALUATION_HEADING}\n\nrun `b`")
    assert second.count(EVALUATION_HEADING) == 1 and "run `a`" not in second
    assert second.startswith(card) and second.endswith("run `b`")
    assert with_evaluation("", f"{EVALUATION_HEADING}\n\nrun `c`").startswith(EVALUATION_HEADING)
