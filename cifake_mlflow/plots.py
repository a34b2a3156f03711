"""Evaluation figures as matplotlib ``Figure`` objects (no pyplot state, safe headless)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from cifake_mlflow.metrics import CLASS_NAMES, confusion, roc_auc


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
