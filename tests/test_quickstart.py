"""The quick start on a shrunk recipe: training run, study, and the better one as champion.

The recipe dictionaries are shrunk (fewer images, one epoch), not mocked: real TensorFlow,
MLflow, Optuna and the registry gate run.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from conftest import write_cifake
from mlflow.tracking import MlflowClient

from cifake_mlflow import MODEL_NAME
from cifake_mlflow.registry import score_model
from cifake_mlflow.registry.register import run_config
from cifake_mlflow.training.run import prepare_data
from cifake_mlflow.tuning import quickstart as qs


@pytest.fixture
def shrunk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}\n")
    monkeypatch.setattr(qs, "QUICK_RECIPE", {**qs.QUICK_RECIPE, "epochs": 1, "batch_size": 16})
    trials = {**qs.QUICK_TRIALS, "max_train_images": 40, "max_test_images": 10, "epochs": 1}
    monkeypatch.setattr(qs, "QUICK_TRIALS", trials)
    monkeypatch.setattr(
        qs, "QUICK_STUDY", {**qs.QUICK_STUDY, "n_trials": 2, "search_space": str(space)}
    )
    return write_cifake(tmp_path / "cifake", {"train": 40, "test": 10}, seed=4)


def test_quickstart_leaves_the_better_model_on_validation_as_champion(
    tracking: str, cache_dir: Path, shrunk: Path
) -> None:
    result = qs.quickstart(str(shrunk), storage=f"sqlite:///{Path.cwd() / 'optuna.db'}")
    assert len(result.decisions) == 2  # the study's best, then the training run
    assert result.decisions[0].alias == "champion"  # first version of the model
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    # Both candidates scored on the training run's validation images: the champion is the
    # better one (ties go to the newer version, as the gate with margin 0 decides).
    run = mlflow.get_run(result.train_run_id)
    ds, splits = prepare_data(run_config(run), progress=False)
    images, labels = ds.images[splits.val], ds.labels[splits.val]
    scores = {
        v: score_model(f"models:/{MODEL_NAME}/{v}", images, labels, "roc_auc") for v in ("1", "2")
    }
    expected = "2" if scores["2"] >= scores["1"] else "1"
    assert str(champion.version) == expected, scores
    assert result.champion is not None and str(result.champion.version) == expected
    # The versions carry their model cards.
    card = client.get_model_version(MODEL_NAME, "2").description
    assert card.startswith(f"# {MODEL_NAME} v2")
    assert "mlflow run . --env-manager local" in card and "-P stem_stride=1" in card
    assert "| test accuracy |" in card and "Known limits" in card
    assert f"dataset digest `{ds.digest}`" in card
