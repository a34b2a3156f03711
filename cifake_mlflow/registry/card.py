"""The model card: the description a registered version shows in the MLflow UI.

Built from what the source run logged, so it states only measured facts: the command that
reproduces the run, the data digests, clean metrics with their 95% intervals, the robustness
metrics the run measured, the gate's decision, and the known limits.
"""

from __future__ import annotations

import mlflow

from cifake_mlflow.registry.gate import GateDecision
from cifake_mlflow.training.config import TrainConfig

#: What the detector has never been tested on; stated on every card.
KNOWN_LIMITS = (
    "Trained and tested on CIFAKE only: CIFAR-10 photos (REAL) against Stable Diffusion v1.4 "
    "images (FAKE), 32x32 JPEGs at quality 75. Images from other generators, at other "
    "resolutions or after other processing are untested; every input is brought to 32x32 "
    "before scoring."
)
#: (metric prefix, label) of the clean rows, in card order.
CLEAN_ROWS = (
    ("test_accuracy", "test accuracy"),
    ("test_roc_auc", "test ROC-AUC"),
    ("test_dedup_accuracy", "test accuracy, exact copies of training images removed"),
    (
        "test_leakfree_accuracy",
        "test accuracy, copies and near-copies of train images removed",
    ),
    ("test_dedup_roc_auc", "test ROC-AUC, exact copies of training images removed"),
    (
        "test_leakfree_roc_auc",
        "test ROC-AUC, copies and near-copies of train images removed",
    ),
    ("best_val_accuracy", "validation accuracy (kept epoch)"),
    ("best_val_roc_auc", "validation ROC-AUC (kept epoch)"),
)


def reproduce_command(params: dict[str, str]) -> str:
    """``mlflow run .`` with every option the run set away from its default."""
    defaults = TrainConfig().to_params()
    changed = [
        f"-P {k}={'PATH' if k == 'data' else v}"
        for k, v in params.items()
        if k in defaults and k not in ("run_name", "cache_dir") and v != defaults[k]
    ]
    if not any(c.startswith("-P data=") for c in changed):
        changed.insert(0, "-P data=PATH")
    return "mlflow run . --env-manager local " + " ".join(changed)


def _value(metrics: dict[str, float], key: str) -> str:
    value = metrics[key]
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    interval = f"{low:.4f}-{high:.4f}" if low is not None and high is not None else ""
    return f"| {value:.4f} | {interval} |"


def robustness_rows(metrics: dict[str, float]) -> list[str]:
    """``| transformation | accuracy | ROC-AUC |`` for each ``*robust_<name>_accuracy`` logged."""
    rows = []
    for key in sorted(metrics):
        for prefix in ("robust_", "val_robust_"):
            if key.startswith(prefix) and key.endswith("_accuracy"):
                name = key[len(prefix) : -len("_accuracy")]
                auc = metrics.get(f"{prefix}{name}_roc_auc")
                split = "validation" if prefix == "val_robust_" else "test"
                auc_text = f"{auc:.4f}" if auc is not None else ""
                rows.append(f"| {name} ({split}) | {metrics[key]:.4f} | {auc_text} |")
    return rows


def model_card(run: mlflow.entities.Run, decision: GateDecision, origin: str = "") -> str:
    """The markdown description of the version ``decision`` registered from ``run``."""
    params, metrics = run.data.params, run.data.metrics
    lines = [
        f"# {decision.name} v{decision.version}: MobileNetV2 CIFAKE detector",
        "",
        origin or f"Registered from run `{run.info.run_id}` ({run.info.run_name}).",
        "",
        f"**Reproduce:** `{reproduce_command(params)}`",
        "",
        f"**Source:** run `{run.info.run_id}`, git commit `{params.get('git_commit', '')}`.",
        f"**Data:** dataset digest `{params.get('dataset_digest', '')}`; "
        f"{params.get('n_train', '?')} training, {params.get('n_val', '?')} validation, "
        f"{params.get('n_test', '?')} test images; "
        f"{params.get('dropped_test_leaks', '0')} test images that are exact copies of "
        "training images were left out of the test split.",
        "",
        "| metric | value | 95% interval |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {label} {_value(metrics, key)}" for key, label in CLEAN_ROWS if key in metrics]
    robust = robustness_rows(metrics)
    if robust:
        lines += ["", "| robustness | accuracy | ROC-AUC |", "| --- | --- | --- |", *robust]
    lines += [
        "",
        f"**Gate** ({decision.metric}, on the validation split): {decision.alias}; "
        f"{decision.reason}.",
        "",
        f"**Known limits:** {KNOWN_LIMITS}",
    ]
    return "\n".join(lines)
