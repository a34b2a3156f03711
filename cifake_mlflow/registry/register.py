"""Register one training run's model: the one function every command registers through.

``cifake register``, a study's best trial and the quick start's champion all come here: the
run's model is gated against the champion on the validation split the run's own settings carve
from the data (never the test split), and the new version's description becomes its model card.
:func:`attach_evaluation` links a later ``cifake evaluate`` run to the version it scored.
"""

from __future__ import annotations

from collections.abc import Mapping

import mlflow
from mlflow.tracking import MlflowClient

from cifake_mlflow import MODEL_NAME, tracking
from cifake_mlflow.data.dataset import Dataset, Splits
from cifake_mlflow.registry.card import evaluation_section, model_card, with_evaluation
from cifake_mlflow.registry.gate import GateDecision, logged_model_uri, register_and_gate
from cifake_mlflow.tracking.compare import registered_version
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.training.run import prepare_data

#: Metrics of the source run copied onto the version as tags (searchable in the registry).
_TAGGED_METRICS = ("test_accuracy", "test_roc_auc")


def run_config(run: mlflow.entities.Run, data: str | None = None) -> TrainConfig:
    """The TrainConfig a run was trained with (its logged params), ``data`` replaced if given."""
    known = set(TrainConfig().to_params())
    values = {k: v for k, v in run.data.params.items() if k in known}
    if data:
        values["data"] = data
    return TrainConfig.from_strings(values)


def register_run(
    run_id: str,
    name: str = MODEL_NAME,
    *,
    margin: float = 0.0,
    metric: str = "roc_auc",
    data: tuple[Dataset, Splits] | None = None,
    data_path: str | None = None,
    tags: Mapping[str, str] | None = None,
    origin: str = "",
) -> GateDecision:
    """Register ``run_id``'s model as a new version of ``name`` through the champion gate.

    ``data`` is the run's dataset and splits when the caller holds them (a study); otherwise
    they are rebuilt from the run's params (``data_path`` points at the data if it moved).
    ``origin`` opens the model card (which study or command registered it).
    """
    run = mlflow.get_run(run_id)
    model_uri = logged_model_uri(run)  # refuses a run without a model before loading data
    ds, splits = data if data is not None else prepare_data(run_config(run, data_path))
    all_tags = {
        "run_id": run_id,
        "dataset_digest": ds.digest,
        **{
            k: f"{run.data.metrics[k]:.6f}"
            for k in ("test_accuracy", "test_roc_auc")
            if k in run.data.metrics
        },
        **(tags or {}),
    }
    decision = register_and_gate(
        model_uri,
        name,
        ds.images[splits.val],
        ds.labels[splits.val],
        metric=metric,
        margin=margin,
        tags=all_tags,
        eval_digest=tracking.split_digest(ds, splits.val),
    )
    card = model_card(mlflow.get_run(run_id), decision, origin)
    MlflowClient().update_model_version(name, decision.version, description=card)
    return decision


def attach_evaluation(model_uri: str, evaluation_run_id: str) -> tuple[str, str] | None:
    """Tag the registered version behind ``model_uri`` with its evaluation run and put the
    run's metrics (test, leak-free, robustness) on its model card.

    Returns ``(name, version)``, or None when ``model_uri`` names no registered version.
    """
    version = registered_version(model_uri)
    if version is None:
        return None
    name, number = version.name, str(version.version)
    client = MlflowClient()
    client.set_model_version_tag(name, number, "evaluation_run_id", evaluation_run_id)
    section = evaluation_section(mlflow.get_run(evaluation_run_id))
    card = with_evaluation(version.description or "", section)
    client.update_model_version(name, number, description=card)
    return name, number
