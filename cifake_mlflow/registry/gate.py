"""The MLflow Model Registry: register a run's detector and gate the ``champion`` alias.

A new version takes ``champion`` only if it beats the current champion, both scored on the
same evaluation images, by the configured margin; otherwise it becomes ``challenger`` and the
reason is written on the version. The first version of a model becomes champion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifake_mlflow.data import perturbations
from cifake_mlflow.evaluation import metrics
from cifake_mlflow.tracking.schema import MAX_BATCH, frame

CHAMPION = "champion"
CHALLENGER = "challenger"
GATE_METRICS = ("roc_auc", "accuracy")
LOGGED_MODEL_URI = re.compile(r"models:/(?P<model_id>m-[0-9a-f]+)")


class RegistryError(RuntimeError):
    """A registry request cannot be served; the message says why and what to do."""


def logged_model_uri(run: mlflow.entities.Run) -> str:
    """The model a training run logged (its ``model_uri`` tag); refuses a run that logged none
    (``log_model=False``), before any data is loaded to gate it."""
    uri = run.data.tags.get("model_uri")
    if not uri:
        raise RegistryError(
            f"run {run.info.run_id} logged no model (log_model=False), so it cannot be "
            "registered: train it again with --log-model true"
        )
    return uri


@dataclass(frozen=True)
class GateDecision:
    """The outcome of the champion/challenger gate for one new version."""

    name: str
    version: str
    alias: str
    promoted: bool
    reason: str
    metric: str
    candidate_score: float
    champion_score: float | None


def gate_metric(metric: str) -> tuple[str | None, str]:
    """``(transformation or None, roc_auc|accuracy)`` of a gate metric; refuses others."""
    if metric in GATE_METRICS:
        return None, metric
    try:
        robust = perturbations.split_robust_metric(metric)
    except ValueError as exc:
        raise RegistryError(f"gate metric {metric!r}: {exc}") from None
    if robust is None:
        raise RegistryError(
            f"gate metric {metric!r}: use roc_auc, accuracy, or robust_<transformation>_"
            "<roc_auc|accuracy> with a transformation of cifake evaluate, e.g. "
            "robust_blur1_accuracy"
        )
    return robust


def score_model(model_uri: str, images: np.ndarray, labels: np.ndarray, metric: str) -> float:
    """Load ``model_uri`` as pyfunc and score it on ``images`` by a gate metric.

    Images go in requests of at most :data:`~cifake_mlflow.tracking.schema.MAX_BATCH`, the
    limit the served model enforces; accuracy uses the label the model itself gives (its own
    threshold). A robust metric transforms the images first, as ``cifake evaluate`` does (same
    seed for every model, so both sides of the gate see the same images).
    """
    transformation, base = gate_metric(metric)
    if transformation is not None:
        images = perturbations.apply(transformation, images)
    model = mlflow.pyfunc.load_model(model_uri)
    answers = [
        model.predict(frame(images[i : i + MAX_BATCH])) for i in range(0, len(images), MAX_BATCH)
    ]
    answer = pd.concat(answers, ignore_index=True)
    if base == "roc_auc":
        return metrics.roc_auc(labels, answer["prob_fake"].to_numpy())
    said = (answer["label"] == "FAKE").to_numpy().astype(np.int64)
    return float(np.mean(said == np.asarray(labels).ravel()))


def champion(name: str) -> ModelVersion | None:
    """The version holding the champion alias, or None (also when the model does not exist)."""
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def champion_uri(name: str) -> str:
    """``models:/name@champion``, after checking that it exists."""
    if champion(name) is None:
        raise RegistryError(
            f"registered model {name!r} has no {CHAMPION!r} alias (or does not exist). "
            "Register a run first: cifake register RUN_ID, or run a study with cifake tune."
        )
    return f"models:/{name}@{CHAMPION}"


def register_and_gate(
    model_uri: str,
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    metric: str = "roc_auc",
    margin: float = 0.0,
    tags: Mapping[str, str] | None = None,
    description: str = "",
    eval_digest: str = "",
) -> GateDecision:
    """Register ``model_uri`` as a new version of ``name`` and run the champion gate.

    ``eval_digest`` identifies the evaluation images (tag ``gate_split_digest``). When the
    champion was gated on other images, the reason says so: it may have trained on some of
    today's evaluation images, which favours it.
    """
    gate_metric(metric)  # refuses an unknown metric before anything is registered
    client = MlflowClient()
    candidate = score_model(model_uri, images, labels, metric)  # fails before registering
    all_tags = {**(tags or {}), **({"gate_split_digest": eval_digest} if eval_digest else {})}
    version = new_version(client, model_uri, name, all_tags)
    current = champion(name)  # read late: another worker may have promoted meanwhile
    if current is None:
        decision = GateDecision(
            name, version, CHAMPION, True, "first version of the model", metric, candidate, None
        )
    else:
        held = score_model(f"models:/{name}/{current.version}", images, labels, metric)
        promoted = candidate >= held + margin
        verdict = "beats" if promoted else "does not beat"
        reason = (
            f"{metric} {candidate:.4f} {verdict} champion v{current.version} "
            f"({held:.4f}) by the margin {margin:g} on the same {len(labels)} images"
        )
        held_digest = current.tags.get("gate_split_digest", "")
        if eval_digest and held_digest != eval_digest:
            reason += (
                " (caution: the champion was gated on other images and may have trained on "
                "some of these)"
            )
        alias = CHAMPION if promoted else CHALLENGER
        decision = GateDecision(name, version, alias, promoted, reason, metric, candidate, held)
    _record(client, decision, description)
    return decision


def new_version(client: MlflowClient, model_uri: str, name: str, tags: Mapping[str, str]) -> str:
    """A new version of ``name`` from a LoggedModel URI (``models:/m-<id>``), as
    ``mlflow.register_model`` makes it, without the lines that function prints to stderr: the
    gate reports the version with its decision in one line."""
    logged = LOGGED_MODEL_URI.fullmatch(model_uri)
    if logged is None:  # runs:/ and other URIs: MLflow resolves them
        return str(mlflow.register_model(model_uri, name, tags=dict(tags)).version)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:  # another version or worker created it first
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    created = client.create_model_version(
        name, model_uri, tags=dict(tags), model_id=logged["model_id"]
    )
    return str(created.version)


def _record(client: MlflowClient, decision: GateDecision, description: str) -> None:
    """Aliases, gate tags and the description on the new version."""
    client.set_registered_model_alias(decision.name, decision.alias, decision.version)
    gate_tags = {
        "gate_metric": decision.metric,
        "gate_score": f"{decision.candidate_score:.6f}",
        "gate_decision": decision.alias,
        "gate_reason": decision.reason,
    }
    if decision.champion_score is not None:
        gate_tags["gate_champion_score"] = f"{decision.champion_score:.6f}"
    for key, value in gate_tags.items():
        client.set_model_version_tag(decision.name, decision.version, key, value)
    text = f"{description}\n\nGate: {decision.reason}.".strip()
    client.update_model_version(decision.name, decision.version, description=text)
