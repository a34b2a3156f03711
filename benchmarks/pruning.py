"""Tuning benchmark: the same small Optuna study with the median pruner and without pruning.

    python benchmarks/pruning.py [--data PATH] [--quick]

Both studies use the same seeded TPE sampler, the from-scratch search space, 32 px, and the same
stratified subset of real CIFAKE; neither logs nor registers models (``log_model=False``: the
studies compare metrics, and a SavedModel export per trial would only add the same fixed cost to
both). Reported: wall time (ours = with pruning, baseline = without) and the best validation
ROC-AUC each study found.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    ROOT,
    extract_train_subset,
    result,
    script_main,
    tracking_store,
)


def study(data: Path, work: Path, pruner: str, trials: int, epochs: int) -> tuple[float, float]:
    """Run one study; (seconds, best value).

    With few trials (``--quick``), the median pruner starts judging after one finished trial
    instead of the project's two, so that pruning has trials to act on: in the 2-trial quick
    study, the second trial is stopped after its first epoch when it is below the first.
    """
    import optuna

    from cifake_mlflow.training.config import TrainConfig
    from cifake_mlflow.tuning.config import TuneConfig
    from cifake_mlflow.tuning.study import run_study

    base = TrainConfig(
        data=str(data), weights="none", image_size=32, epochs=epochs, batch_size=64,
        cache_dir=str(work / "cache"), experiment=f"bench-{pruner}", log_model=False,
    )  # fmt: skip
    tune = TuneConfig(
        study_name=f"bench-{pruner}",
        storage=f"sqlite:///{work / 'optuna.db'}",
        n_trials=trials,
        search_space=str(ROOT / "tuning" / "search_space_scratch.yaml"),
        pruner=pruner,
        register=False,
    )
    start = time.perf_counter()
    with tracking_store(f"sqlite:///{work / 'mlflow.db'}"):
        early = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1)
        custom = early if pruner == "median" and trials < 5 else None
        found = run_study(base, tune, pruner=custom, verbose=0)
    return time.perf_counter() - start, float(found.study.best_value)


def run(data: Path, quick: bool = False) -> dict[str, dict]:
    # --quick: every trial pays a fixed cost (building and tracing the model, evaluation) that
    # smaller data does not remove, so fewer trials are the only way to a short run.
    trials, epochs, per_class = (2, 2, 100) if quick else (8, 4, 1500)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subset = extract_train_subset(data, per_class, work / "cifake")
        pruned_s, pruned_best = study(subset, work, "median", trials, epochs)
        full_s, full_best = study(subset, work, "none", trials, epochs)
    return {
        "tuning_wall_time": result(pruned_s, full_s, "s", trials=trials, epochs=epochs),
        "tuning_best_val_roc_auc": result(pruned_best, full_best, "val_roc_auc"),
    }


def main(argv: list[str] | None = None) -> int:
    return script_main(run, __doc__, ("pruned", "unpruned"), argv)


if __name__ == "__main__":
    sys.exit(main())
