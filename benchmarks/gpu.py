"""GPU training throughput: mixed precision against float32, in the reference configuration.

    python benchmarks/gpu.py [--quick]                     # TensorFlow backend, as training runs
    KERAS_BACKEND=jax python benchmarks/gpu.py [--quick]   # any Keras 3 backend

Builds our detector with ``cifake_mlflow.model.build_model`` (MobileNetV2 + the reference head,
32x32 input resized inside the model) and times training steps on in-memory batches (the
ceiling any input pipeline can reach), for these configurations:

- ``gpu_reference_config``: the reference design, 160 px, last 30 base layers trainable,
  batch 64, Adam, binary cross-entropy;
- ``gpu_scratch_64px``: the from-scratch CPU accuracy recipe, 64 px, whole base trainable,
  batch 128;
- ``..._b256``, ``..._b512``: the same with larger batches, which a GPU needs to be kept busy.

Each is measured with float16 mixed precision (ours: what ``mixed_precision=auto`` turns on
when a GPU is present) against plain float32 (baseline), in the same process. On the JAX
backend every step is XLA-compiled; on TensorFlow the steps are compiled with ``jit_compile``
as ``auto`` would. The script needs no TensorFlow on the JAX backend, which is how it runs on a
machine where only a GPU build of JAX is installed; for that reason it compiles the model here
rather than through ``cifake_mlflow.train.compile_model``, whose module imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import print_table, result, save

CONFIGS = {  # name: (image_size, unfrozen_layers, batch)
    "gpu_reference_config": (160, 30, 64),
    "gpu_reference_config_b256": (160, 30, 256),
    "gpu_scratch_64px": (64, None, 128),
    "gpu_scratch_64px_b512": (64, None, 512),
}


def build(image_size: int, unfrozen: int | None, policy: str):
    """Our detector under a dtype policy, compiled as training compiles it on a GPU (XLA)."""
    import keras

    from cifake_mlflow.modeling.mobilenet import build_model
    from cifake_mlflow.training.config import TrainConfig

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    cfg = TrainConfig(weights="none", image_size=image_size, unfrozen_layers=unfrozen)
    model = build_model(cfg)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="binary_crossentropy",
        metrics=["accuracy"],
        jit_compile=True,
    )
    return model


def images_per_second(model, batch: int, steps: int, warmup: int = 3) -> float:
    """Training images per second over ``steps`` steps, after ``warmup`` compiling steps.

    Each ``fit`` returns only once its last step's metrics are read back, which waits for the
    device, so the timed call covers the GPU work of every timed step.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * max(steps, warmup), 32, 32, 3)).astype("float32")
    y = rng.integers(0, 2, len(x)).astype("float32")
    model.fit(x[: batch * warmup], y[: batch * warmup], batch_size=batch, verbose=0)
    start = time.perf_counter()
    model.fit(x[: batch * steps], y[: batch * steps], batch_size=batch, verbose=0)
    return batch * steps / (time.perf_counter() - start)


def gpu_name() -> str | None:
    """The GPU Keras' backend computes on, in words; None when it sees none."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        gpus = jax.devices("gpu") if jax.default_backend() == "gpu" else []
        return str(gpus[0].device_kind) if gpus else None
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def run(quick: bool) -> dict[str, dict]:
    """Measure every configuration in both precisions; returns results.json entries."""
    import keras

    device = gpu_name()
    if device is None:  # XLA-compiled MobileNetV2 steps crawl on CPU: nothing to learn here
        print(f"gpu: skipped, {keras.backend.backend()} sees no GPU")
        return {}
    steps, results = 10 if quick else 60, {}
    for name, (size, unfrozen, batch) in CONFIGS.items():
        rates = {}
        for policy in ("float32", "mixed_float16"):
            rates[policy] = images_per_second(build(size, unfrozen, policy), batch, steps)
            print(f"{name} {policy}: {rates[policy]:,.0f} images/s", flush=True)
        results[name] = result(
            rates["mixed_float16"], rates["float32"], "images/s",
            device=device, backend=keras.backend.backend(), batch=batch, image_size=size,
        )  # fmt: skip
    keras.mixed_precision.set_global_policy("float32")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    results = run(args.quick)
    print_table("GPU training step (ours: mixed float16; baseline: float32)", results,
                "mixed f16", "float32")  # fmt: skip
    save(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
