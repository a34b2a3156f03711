"""Grad-CAM: where in the image the detector's decision came from.

Grad-CAM (Selvaraju et al., 2017) weights a convolutional feature map by the gradient of the
decision, averaged over space, and keeps the positive part. Our models see 32x32 images, so
the base's last feature map is 1x1 at 32 px and 2x2 at 64 px: useless as a map. The map is
taken instead from the deepest base layer that still has at least :data:`MIN_SIDE` cells per
side, then resized to the input's 32x32. The decision is the logit of the predicted class
(FAKE: logit, REAL: -logit), so a map always shows the evidence for what the model said.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from matplotlib.figure import Figure

from cifake_mlflow.modeling.mobilenet import BASE_NAME, TestTimeAugmentation

#: Smallest side (in cells) of the feature map Grad-CAM reads.
MIN_SIDE = 4


def target_layer(base: keras.Model, min_side: int = MIN_SIDE) -> keras.Layer:
    """The deepest activation of ``base`` whose feature map is at least ``min_side`` wide.

    Only ReLU outputs qualify: padding layers have the right shape but hold zero borders.
    """
    chosen = None
    for layer in base.layers:
        shape = layer.output.shape
        if isinstance(layer, keras.layers.ReLU) and shape[1] is not None and shape[1] >= min_side:
            chosen = layer
    if chosen is None:
        raise ValueError(f"no layer of {base.name} has a feature map of {min_side}+ cells")
    return chosen


def grad_cam(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Heatmaps in [0, 1], one per image, at the images' own height and width."""
    base = model.get_layer(BASE_NAME)
    layer = target_layer(base)
    inner = keras.Model(base.inputs, [layer.output, base.output])
    x = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    with tf.GradientTape() as tape:
        h = x
        for step in model.layers[1:]:
            if isinstance(step, TestTimeAugmentation):
                continue  # explain the image as given, not its mirror-image twin
            if step is base:
                features, h = inner(h, training=False)
            else:
                h = step(h, training=False)
        prob = tf.clip_by_value(tf.reshape(h, [-1]), 1e-7, 1 - 1e-7)
        logit = tf.math.log(prob) - tf.math.log1p(-prob)
        decision = tf.where(prob >= 0.5, logit, -logit)
    grads = tape.gradient(decision, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, x.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0.0)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the heatmap (jet colours) blended on top; float RGB in [0, 1]."""
    colours = colormaps["jet"](heatmap)[..., :3]
    return (1 - alpha) * (np.asarray(image) / 255.0) + alpha * colours


def explanation_figure(
    image: np.ndarray, heatmap: np.ndarray, prob_fake: float, title: str
) -> Figure:
    """Image beside its Grad-CAM overlay, titled with prob_fake and the label said."""
    fig = Figure(figsize=(5, 2.9))
    left, right = fig.subplots(1, 2)
    left.imshow(image, interpolation="nearest")
    right.imshow(overlay(image, heatmap), interpolation="bilinear")
    for ax, name in ((left, "input (32x32)"), (right, "Grad-CAM")):
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{title}\nprob_fake {prob_fake:.4f}", fontsize=9)
    fig.tight_layout()
    return fig


def grid_figure(
    images: np.ndarray,
    heatmaps: np.ndarray,
    captions: list[str],
    title: str,
    cols: int = 8,
) -> Figure:
    """Pairs of rows: images, then their overlays; one caption per image."""
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig = Figure(figsize=(cols * 1.5, rows * 3.2))
    axes = np.atleast_2d(fig.subplots(2 * rows, cols))
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, heatmap, caption) in enumerate(zip(images, heatmaps, captions, strict=True)):
        r, c = divmod(i, cols)
        axes[2 * r, c].imshow(image, interpolation="nearest")
        axes[2 * r, c].set_title(caption, fontsize=7)
        axes[2 * r + 1, c].imshow(overlay(image, heatmap))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_overlay(
    path: Path, image: np.ndarray, heatmap: np.ndarray, prob: float, title: str
) -> Path:
    """Save :func:`explanation_figure` as a PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    explanation_figure(image, heatmap, prob, title).savefig(path, dpi=120)
    return path


@dataclass(frozen=True)
class Explained:
    """One explained file: its score, the label said and where the overlay went."""

    source: Path
    prob_fake: float
    label: str
    png: Path


def explain_files(paths: list[Path], model_uri: str, out_dir: Path) -> list[Explained]:
    """Grad-CAM overlays for image files, scored as the served model scores them.

    Files go through :func:`cifake_mlflow.data.decode.decode_image` (the serving path), prob_fake
    through the model's stored temperature, the label through its stored threshold.
    """
    from cifake_mlflow.data.decode import ImageDecodeError, decode_image
    from cifake_mlflow.tracking import load_detector

    detector = load_detector(model_uri)
    images = []
    for path in paths:
        try:
            images.append(decode_image(path.read_bytes())[0])
        except ImageDecodeError as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from None
    batch = np.stack(images)
    probs = detector.served.scores(batch)
    heatmaps = grad_cam(detector.network, batch)
    out = []
    for index, (path, prob) in enumerate(zip(paths, probs, strict=True)):
        label = "FAKE" if prob >= detector.served.threshold else "REAL"
        png = out_dir / f"{index:03d}_{path.stem}_gradcam.png"
        write_overlay(png, batch[index], heatmaps[index], float(prob), f"{path.name}: {label}")
        out.append(Explained(path, float(prob), label, png))
    return out
