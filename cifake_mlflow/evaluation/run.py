"""One MLflow run that evaluates a logged detector on a dataset (``cifake evaluate``).

The run scores the split through the model's own pyfunc code (what ``mlflow models serve``
runs, with the temperature and threshold stored at training time) and logs:

- the reference table, ROC-AUC, PR-AUC, balanced accuracy, log loss, ECE (15 bins), TPR at 1%
  and 5% FPR and bootstrap 95% intervals, as ``<split>_*`` metrics (``test_accuracy``, ...);
- the same metrics on the images that are not exact copies of a training image
  (``<split>_dedup_*``), and on those that are not near-duplicates of one either
  (``<split>_leakfree_*``: re-encoded, recoloured or mirrored copies, found by
  perceptual hash), so that leakage cannot flatter the score;
- confusion matrix, ROC and PR curves, reliability diagram, score histograms, error grid;
- ``robust_<transformation>_{accuracy,roc_auc,fpr}`` and one summary plot;
- a Grad-CAM grid of correct and wrong predictions.

Metrics are also attached to the evaluated model (MLflow's LoggedModel). ``cifake evaluate``
then links a registered version to the run (:func:`cifake_mlflow.registry.attach_evaluation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from cifake_mlflow import tracking
from cifake_mlflow.data.dataset import SPLITS, DataError, Dataset, load_dataset
from cifake_mlflow.data.near_duplicates import near_duplicate_mask
from cifake_mlflow.data.perturbations import parse_names
from cifake_mlflow.evaluation import gradcam, plots
from cifake_mlflow.evaluation.config import EvalConfig
from cifake_mlflow.evaluation.report import Evaluation, report, robustness_report

#: Images per scoring call (bounds memory; the pyfunc chunks further).
BATCH = 1024


@dataclass
class EvalSummary:
    """What one evaluation run produced."""

    run_id: str
    full: Evaluation
    dedup: Evaluation | None
    leakfree: Evaluation | None
    robustness: dict[str, dict[str, float]] | None


@dataclass(frozen=True)
class TrainReference:
    """The training images a test image may be a copy of: content hashes and pixels."""

    hashes: np.ndarray
    images: np.ndarray


def train_reference(ds: Dataset, cfg: EvalConfig, progress: bool = True) -> TrainReference | None:
    """The training images (``--train-data``'s, else ``--data``'s own); None when there is no
    train split to compare with."""
    if cfg.train_data is not None:
        ds = load_dataset(cfg.train_data, cfg.cache_dir, cfg.on_bad_file, progress, ("train",))
    train = ds.indices("train")
    return TrainReference(ds.hashes[train], ds.images[train]) if len(train) else None


def select_rows(
    ds: Dataset, cfg: EvalConfig, seen: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of the evaluated split, and a mask of those that are not copies of ``seen`` images.

    The mask is None when there are no training images (``seen``) to compare with.
    """
    rows = ds.indices(cfg.split)
    if len(rows) == 0:
        found = sorted({SPLITS[s] for s in ds.splits})
        raise DataError(
            f"split={cfg.split!r}: {ds.source} has no such images (it has: {', '.join(found)})"
        )
    if cfg.max_images is not None and cfg.max_images < len(rows):
        rng = np.random.default_rng(cfg.seed)
        rows = np.sort(rng.choice(rows, cfg.max_images, replace=False))
    if cfg.split == "train" or seen is None:
        return rows, None
    known = set(seen.tolist())
    return rows, np.array([h not in known for h in ds.hashes[rows].tolist()], dtype=bool)


def score_all(detector: tracking.LoadedDetector, images: np.ndarray, what: str) -> np.ndarray:
    """Uncalibrated prob_fake for every image, with a progress bar."""
    out = [
        detector.served.raw_scores(images[i : i + BATCH])
        for i in tqdm(range(0, len(images), BATCH), desc=what, unit="batch", leave=False)
    ]
    return np.concatenate(out)


def evaluate_model(cfg: EvalConfig, progress: bool = True) -> EvalSummary:
    """Run the whole evaluation in one MLflow run; returns its id and reports."""
    detector = tracking.load_detector(cfg.model_uri)
    ds = load_dataset(cfg.data, cfg.cache_dir, cfg.on_bad_file, progress, (cfg.split,))
    reference = train_reference(ds, cfg, progress)
    rows, fresh = select_rows(ds, cfg, reference.hashes if reference is not None else None)
    images, labels = ds.images[rows], ds.labels[rows]
    leakfree = None
    if fresh is not None and reference is not None:
        near = near_duplicate_mask(images, reference.images, cfg.near_duplicate_distance)
        leakfree = fresh & ~near
    threshold = cfg.threshold if cfg.threshold is not None else detector.served.threshold
    temperature = detector.served.temperature
    tracking.use_experiment(cfg.experiment)
    with tracking.start_run(run_name=cfg.run_name or run_name(cfg)) as run:
        _log_setup(cfg, detector, len(rows), (fresh, leakfree), threshold)
        raw = score_all(detector, images, f"scoring {cfg.split}")
        full = report(labels, raw, threshold, temperature, cfg.bootstrap)
        tracking.log_evaluation(full, images, cfg.split, model_id=detector.model_id)
        print(full.text, flush=True)
        subsets: dict[str, Evaluation] = {}
        if fresh is not None and leakfree is not None:
            for name, mask in (("dedup", fresh), ("leakfree", leakfree)):
                subsets[name] = _log_subset(cfg, detector, name, labels[mask], raw[mask], threshold)
            print(
                f"leak-free {cfg.split} ({int(leakfree.sum()):,} images, without "
                f"{int((~leakfree).sum()):,} copies or near-duplicates of training images): "
                f"accuracy {subsets['leakfree'].table['accuracy']:.4f}, "
                f"ROC-AUC {subsets['leakfree'].table['roc_auc']:.4f}",
                flush=True,
            )
        robust = _robustness(cfg, detector, images, labels, threshold) if cfg.robustness else None
        if cfg.explain_samples > 0:
            _gradcam_grid(cfg, detector, images, labels, full)
    return EvalSummary(run.info.run_id, full, subsets.get("dedup"), subsets.get("leakfree"), robust)


def _log_subset(
    cfg: EvalConfig,
    detector: tracking.LoadedDetector,
    name: str,
    labels: np.ndarray,
    raw: np.ndarray,
    threshold: float,
) -> Evaluation:
    """Metrics (``<split>_<name>_*``) and report text of one subset of the scored images."""
    subset = report(labels, raw, threshold, detector.served.temperature, cfg.bootstrap)
    tracking.log_metrics(subset.flat(f"{cfg.split}_{name}_"), model_id=detector.model_id)
    tracking.log_text(subset.text, f"evaluation/{name}_classification_report.txt")
    return subset


def run_name(cfg: EvalConfig) -> str:
    """``eval cifake-detector@champion on test`` (shortened for the UI's run list)."""
    model = cfg.model_uri.removeprefix("models:/").removeprefix("runs:/")
    return f"eval {model[:40]} on {cfg.split}"


def _log_setup(
    cfg: EvalConfig,
    detector: tracking.LoadedDetector,
    count: int,
    masks: tuple[np.ndarray | None, np.ndarray | None],
    threshold: float,
) -> None:
    fresh, leakfree = masks
    tracking.set_tags(
        {
            "cifake.kind": "evaluation",
            "evaluated_model_uri": cfg.model_uri,
            **({"evaluated_run_id": detector.run_id} if detector.run_id else {}),
            "dedup": "test images equal to a train image left out"
            if fresh is not None
            else "unavailable: no train split to compare with (give --train-data)",
        }
    )
    tracking.log_params_once(
        {
            "model_uri": cfg.model_uri,
            "data": cfg.data,
            "split": cfg.split,
            "train_data": cfg.train_data or "auto",
            "images": str(count),
            "dedup_images": str(int(fresh.sum())) if fresh is not None else "n/a",
            "leakfree_images": str(int(leakfree.sum())) if leakfree is not None else "n/a",
            "near_duplicate_distance": str(cfg.near_duplicate_distance),
            "threshold": f"{threshold:g}",
            "temperature": f"{detector.served.temperature:.6g}",
            "bootstrap": str(cfg.bootstrap),
            "robustness": ",".join(parse_names(cfg.transforms)) if cfg.robustness else "off",
            "explain_samples": str(cfg.explain_samples),
            "seed": str(cfg.seed),
        }
    )


def _robustness(
    cfg: EvalConfig,
    detector: tracking.LoadedDetector,
    images: np.ndarray,
    labels: np.ndarray,
    threshold: float,
) -> dict[str, dict[str, float]]:
    names = parse_names(cfg.transforms)
    bar = tqdm(total=len(names) + 1, desc="robustness", unit="transform")

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(0 if name == "clean" else 1)

    results = robustness_report(
        lambda x: detector.served.scores(x), images, labels, threshold, names, cfg.seed, step
    )
    bar.update(1)
    bar.close()
    flat = {
        f"robust_{name}_{metric}": value
        for name, values in results.items()
        if name != "clean"
        for metric, value in values.items()
    }
    tracking.log_metrics(flat, model_id=detector.model_id)
    tracking.log_json(results, "robustness/results.json")
    tracking.log_figure(plots.robustness_figure(results), "robustness/summary.png")
    return results


def _gradcam_grid(
    cfg: EvalConfig,
    detector: tracking.LoadedDetector,
    images: np.ndarray,
    labels: np.ndarray,
    ev: Evaluation,
) -> None:
    rng = np.random.default_rng(cfg.seed)
    said = (ev.scores >= ev.threshold).astype(int)
    picked = []
    for right in (True, False):
        pool = np.flatnonzero((said == labels) == right)
        picked.extend(rng.choice(pool, min(cfg.explain_samples, len(pool)), replace=False))
    if not picked:
        return
    picked = np.asarray(picked)
    heatmaps = gradcam.grad_cam(detector.network, images[picked])
    names = ("REAL", "FAKE")
    captions = [
        f"{'ok' if said[i] == labels[i] else 'WRONG'} {names[labels[i]]}->{names[said[i]]}"
        f"\n{ev.scores[i]:.3f}"
        for i in picked
    ]
    title = "Grad-CAM: evidence for the predicted class (correct first, then wrong)"
    tracking.log_figure(
        gradcam.grid_figure(images[picked], heatmaps, captions, title),
        "explanations/gradcam_grid.png",
    )
