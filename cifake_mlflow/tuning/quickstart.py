"""The quick start: one training run on the full split, a small study, the better as champion.

``cifake quickstart --data PATH`` (``mlflow run . -e quickstart``) runs, in one experiment:

1. a training run of the native-stem MobileNetV2 at 32 px (:data:`QUICK_RECIPE`) on the whole
   training split, in a time budget, evaluated on the test split;
2. an Optuna study of :data:`QUICK_TRIALS` short trials on a subset, searching
   ``tuning/search_space_scratch.yaml``;
3. both candidates registered through the champion gate, the study's best first and then the
   training run: the gate scores each against the champion on the same validation images
   (the trials' subsets are drawn from the training part of the same split), so the version
   left as champion is the better one on validation, whichever it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cifake_mlflow import MODEL_NAME, registry
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.training.run import prepare_data, train_and_log
from cifake_mlflow.tuning.config import TuneConfig
from cifake_mlflow.tuning.study import RUN_ID_ATTR, run_study

#: The training run: native stem, half width, AdamW with cosine decay, 4-pixel shifts and
#: flips, flip test-time augmentation. Its 7.5 minutes of training hold the whole command
#: under 15 minutes on the slowest 2-core machines measured (epochs of 330-350 s), and buy up to
#: 3 epochs on fast ones (epochs of 120-140 s).
QUICK_RECIPE: dict[str, Any] = {
    "weights": "none",
    "image_size": 32,
    "stem_stride": 1,
    "alpha": 0.5,
    "epochs": 3,
    "max_minutes": 7.5,
    "batch_size": 128,
    "lr_schedule": "cosine",
    "weight_decay": 0.05,
    "zoom": 0.0,
    "rotation": 0.0,
    "shift": 4,
    "tta": "flip",
}
#: The study's trials: the same recipe for two epochs on a subset (their test score is only
#: reported).
QUICK_TRIALS: dict[str, Any] = {
    "max_train_images": 6_000,
    "max_test_images": 2_000,
    "epochs": 2,
    "max_minutes": None,
}
QUICK_STUDY: dict[str, Any] = {
    "study_name": "quickstart",
    "n_trials": 2,
    "search_space": "tuning/search_space_scratch.yaml",
    "register": False,
}


@dataclass
class QuickstartResult:
    train_run_id: str
    study_best_run_id: str | None
    decisions: list[registry.GateDecision]

    @property
    def champion(self) -> registry.GateDecision | None:
        """The last promotion: the version the quick start leaves as champion."""
        promoted = [d for d in self.decisions if d.promoted]
        return promoted[-1] if promoted else None


def quickstart(
    data: str,
    experiment: str = "cifake",
    storage: str = "sqlite:///optuna.db",
    model_name: str = MODEL_NAME,
) -> QuickstartResult:
    """Train, tune, and register the better of the two (see the module docstring)."""
    base = TrainConfig(data=data, experiment=experiment, run_name="quickstart", **QUICK_RECIPE)
    train = train_and_log(base)
    # Under `mlflow run`, MLFLOW_RUN_ID names the run the training just ended; the study's
    # parent run must be a new one.
    os.environ.pop("MLFLOW_RUN_ID", None)
    study_base = base.replace(run_name=None, **QUICK_TRIALS)
    study = run_study(study_base, TuneConfig(storage=storage, model_name=model_name, **QUICK_STUDY))
    candidates = []
    if study.best_trial is not None:
        candidates.append(study.best_trial.user_attrs[RUN_ID_ATTR])
    candidates.append(train.run_id)
    data_and_splits = prepare_data(base, progress=False)
    decisions = [
        registry.register_run(
            run_id, model_name, data=data_and_splits, origin=f"Quick start run `{run_id}`."
        )
        for run_id in candidates
    ]
    for decision in decisions:
        print(
            f"registered {model_name} v{decision.version} as {decision.alias}: {decision.reason}",
            flush=True,
        )
    return QuickstartResult(train.run_id, candidates[0] if len(candidates) > 1 else None, decisions)
