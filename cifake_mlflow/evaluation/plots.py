"""Evaluation figures as matplotlib ``Figure`` objects (no pyplot state, safe headless)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

from cifake_mlflow.evaluation.metrics import (
    CLASS_NAMES,
    confusion,
    expected_calibration_error,
    reliability,
    roc_auc,
)


def confusion_figure(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> Figure:
    """Confusion matrix with counts and row percentages."""
    counts = confusion(labels, scores, threshold)
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    totals = counts.sum(axis=1, keepdims=True).clip(min=1)
    for (row, col), value in np.ndenumerate(counts):
        share = value / totals[row, 0]
        color = "white" if value > counts.max() / 2 else "black"
        ax.text(col, row, f"{value}\n{share:.1%}", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (threshold {threshold:g})")
    fig.tight_layout()
    return fig


def roc_figure(labels: np.ndarray, scores: np.ndarray) -> Figure:
    """ROC curve of FAKE (positive) against REAL, with its AUC."""
    fpr, tpr, _ = roc_curve(np.asarray(labels).ravel(), np.asarray(scores).ravel())
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc(labels, scores):.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("false positive rate (REAL called FAKE)")
    ax.set_ylabel("true positive rate (FAKE caught)")
    ax.set_title("ROC curve")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def history_figure(history: dict[str, list[float]]) -> Figure:
    """Loss, accuracy and ROC-AUC per epoch, training beside validation."""
    panels = [m for m in ("loss", "accuracy", "roc_auc") if m in history]
    fig = Figure(figsize=(4 * max(1, len(panels)), 3.5))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels))))
    for ax, metric in zip(axes, panels, strict=False):
        epochs = np.arange(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], marker="o", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    return fig


def misclassified_figure(
    images: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    limit: int = 36,
) -> Figure:
    """Grid of the most confidently wrong test images, titled true -> predicted (prob_fake)."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    wrong = np.flatnonzero((scores >= threshold).astype(int) != labels)
    order = wrong[np.argsort(-np.abs(scores[wrong] - threshold))][:limit]
    cols = 6
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig = Figure(figsize=(cols * 1.6, rows * 1.8))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, index in zip(axes, order, strict=False):
        ax.imshow(images[index])
        truth = CLASS_NAMES[int(labels[index])]
        guess = CLASS_NAMES[int(scores[index] >= threshold)]
        ax.set_title(f"{truth}->{guess}\n{scores[index]:.2f}", fontsize=8)
    if len(order) == 0:
        axes[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(f"Misclassified test images ({len(wrong)} in all; most confident first)")
    fig.tight_layout()
    return fig


def pr_figure(labels: np.ndarray, scores: np.ndarray) -> Figure:
    """Precision-recall curve of FAKE, with average precision and the FAKE share as chance."""
    labels = np.asarray(labels).ravel()
    precision, recall, _ = precision_recall_curve(labels, np.asarray(scores).ravel())
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    ax.plot(recall, precision, label=f"AP = {average_precision_score(labels, scores):.4f}")
    ax.axhline(labels.mean(), linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set_xlabel("recall (FAKE caught)")
    ax.set_ylabel("precision (flagged that are FAKE)")
    ax.set_title("Precision-recall curve")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def reliability_figure(
    labels: np.ndarray, scores: np.ndarray, raw_scores: np.ndarray | None = None
) -> Figure:
    """Reliability diagram: observed FAKE share against mean prob_fake per bin, with ECE.

    With ``raw_scores`` the uncalibrated curve is drawn too, so temperature scaling's effect
    is visible; bar heights below show how many images fall in each bin.
    """
    fig = Figure(figsize=(4.5, 5))
    ax, counts_ax = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    curves = [("calibrated" if raw_scores is not None else "model", scores)]
    if raw_scores is not None:
        curves.append(("uncalibrated", raw_scores))
    for name, values in reversed(curves):
        mean, observed, _ = reliability(labels, values)
        ece = expected_calibration_error(labels, values)
        ax.plot(mean, observed, marker="o", label=f"{name} (ECE {ece:.4f})")
    _, _, counts = reliability(labels, scores)
    edges = np.linspace(0, 1, len(counts) + 1)
    counts_ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:blue")
    counts_ax.set_yscale("log")
    counts_ax.set_ylabel("images")
    counts_ax.set_xlabel("mean prob_fake in bin")
    ax.set_ylabel("observed FAKE share")
    ax.set_title(f"Reliability ({len(counts)} bins)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def histogram_figure(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> Figure:
    """prob_fake histograms per true class, with the decision threshold."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    bins = np.linspace(0, 1, 41)
    for label, name in enumerate(CLASS_NAMES):
        ax.hist(scores[labels == label], bins=bins, alpha=0.6, label=f"true {name}")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("prob_fake")
    ax.set_ylabel("images")
    ax.set_title("Scores per class")
    ax.legend()
    fig.tight_layout()
    return fig


def robustness_figure(results: dict[str, dict[str, float]]) -> Figure:
    """Accuracy, ROC-AUC and false-positive rate per transformation, ``clean`` first."""
    names = list(results)
    fig = Figure(figsize=(max(6, 0.8 * len(names) + 2), 4))
    ax = fig.subplots()
    x = np.arange(len(names))
    for offset, metric in zip((-0.27, 0.0, 0.27), ("accuracy", "roc_auc", "fpr"), strict=True):
        values = [results[n][metric] for n in names]
        ax.bar(x + offset, values, width=0.27, label=metric)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.axhline(results[names[0]]["accuracy"], color="tab:blue", linestyle=":", linewidth=1)
    ax.set_title("Robustness to everyday processing (threshold frozen)")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
