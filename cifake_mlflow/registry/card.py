"""The model card: the description a registered version shows in the MLflow UI.

Built from what the source run logged, so it states only measured facts: the command that
reproduces the run, the data digests, clean metrics with their 95% intervals, the robustness
metrics the run measured, the gate's decision, and the known limits. ``cifake evaluate`` of a
registered version adds (or replaces) an evaluation section: the test split's metrics, its
leak-free score and the robustness table at every strength of the suite.
"""

from __future__ import annotations

import time

import mlflow

from cifake_mlflow.data.perturbations import robust_names
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
    """``| transformation (split) | accuracy | ROC-AUC |`` per transformation, in suite order."""
    rows = []
    for name in robust_names(metrics):
        for prefix, split in (("robust_", "test"), ("val_robust_", "validation")):
            accuracy = metrics.get(f"{prefix}{name}_accuracy")
            if accuracy is None:
                continue
            auc = metrics.get(f"{prefix}{name}_roc_auc")
            auc_text = f"{auc:.4f}" if auc is not None else ""
            rows.append(f"| {name} ({split}) | {accuracy:.4f} | {auc_text} |")
    return rows


def metric_tables(metrics: dict[str, float]) -> list[str]:
    """The clean metrics with their intervals, then the robustness table if there is one."""
    lines = ["| metric | value | 95% interval |", "| --- | --- | --- |"]
    lines += [f"| {label} {_value(metrics, key)}" for key, label in CLEAN_ROWS if key in metrics]
    robust = robustness_rows(metrics)
    if robust:
        lines += ["", "| robustness | accuracy | ROC-AUC |", "| --- | --- | --- |", *robust]
    return lines


def model_card(run: mlflow.entities.Run, decision: GateDecision, origin: str = "") -> str:
    """The markdown description of the version ``decision`` registered from ``run``."""
    params, metrics = run.data.params, run.data.metrics
    return "\n".join(
        [
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
            *metric_tables(metrics),
            "",
            f"**Gate** ({decision.metric}, on the validation split): {decision.alias}; "
            f"{decision.reason}.",
            "",
            f"**Known limits:** {KNOWN_LIMITS}",
        ]
    )


#: Opens the section :func:`with_evaluation` adds; one per card (a new evaluation replaces it).
EVALUATION_HEADING = "## Evaluation"


def evaluation_section(run: mlflow.entities.Run) -> str:
    """The card's section for ``cifake evaluate`` run ``run`` of the version."""
    metrics, params = run.data.metrics, run.data.params
    split = params.get("split", "test")
    day = time.strftime("%Y-%m-%d", time.gmtime(run.info.start_time / 1000))
    lines = [
        EVALUATION_HEADING,
        "",
        f"`cifake evaluate` run `{run.info.run_id}` ({day}) on {params.get('images', '?')} "
        f"{split} images.",
        "",
        *metric_tables(metrics),
    ]
    return "\n".join(lines)


def with_evaluation(card: str, section: str) -> str:
    """``card`` with its evaluation section replaced by ``section`` (appended if it has none)."""
    head = card.split(f"\n{EVALUATION_HEADING}\n", 1)[0].rstrip()
    return f"{head}\n\n{section}" if head else section
