"""Where and how training computes: mixed precision, XLA, and the distribution strategy.

Resolved once per run from the config's ``auto``/``on``/``off`` switches and the devices
TensorFlow sees. On a GPU, float16 compute and XLA are the fast defaults; on CPU both are off
by default (float16 is emulated and slower there). ``distribute=mirrored`` replicates the model
over every visible GPU with ``tf.distribute.MirroredStrategy`` (``auto`` does so when there
are two or more); without GPUs it mirrors over the logical CPU devices, which is how the
strategy is tested on CPU-only machines.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import keras
import tensorflow as tf

from cifake_mlflow.config import ConfigError
from cifake_mlflow.console import native_stderr_quiet
from cifake_mlflow.training.config import TrainConfig


@dataclass(frozen=True)
class Acceleration:
    """The resolved settings for one run."""

    mixed_precision: bool
    jit_compile: bool
    strategy: tf.distribute.Strategy
    device: str  # e.g. "GPU x2", "CPU"

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def params(self) -> dict[str, str]:
        """What the run logs, so runs compare on where and how they trained."""
        return {
            "resolved_mixed_precision": str(self.mixed_precision),
            "resolved_jit_compile": str(self.jit_compile),
            "replicas": str(self.replicas),
            "device": self.device,
        }


def gpu_count() -> int:
    """GPUs TensorFlow sees; the probe's CUDA log lines on a CPU-only machine stay quiet."""
    with native_stderr_quiet():
        return len(tf.config.list_physical_devices("GPU"))


def _switch(value: str, default: bool) -> bool:
    return default if value == "auto" else value == "on"


def strategy_for(distribute: str) -> tf.distribute.Strategy:
    """``none``: the default strategy; ``mirrored``: all GPUs, else all logical CPUs."""
    gpus = gpu_count()
    if distribute == "none" or (distribute == "auto" and gpus < 2):
        return tf.distribute.get_strategy()
    kind = "GPU" if gpus else "CPU"
    devices = [d.name for d in tf.config.list_logical_devices(kind)]
    return tf.distribute.MirroredStrategy(devices=devices)


def resolve(cfg: TrainConfig) -> Acceleration:
    """The settings ``cfg`` asks for, resolved for the devices present."""
    gpus = gpu_count()
    strategy = strategy_for(cfg.distribute)
    jit = _switch(cfg.jit_compile, gpus > 0)
    if jit and not gpus and strategy.num_replicas_in_sync > 1:
        raise ConfigError(
            "jit_compile",
            cfg.jit_compile,
            "'off' with distribute=mirrored on CPU devices (XLA cannot place one step's "
            "variables on several CPU devices)",
        )
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise ConfigError(
            "batch_size",
            cfg.batch_size,
            f"a multiple of the {replicas} replicas (each replica takes an equal share)",
        )
    return Acceleration(
        mixed_precision=_switch(cfg.mixed_precision, gpus > 0),
        jit_compile=jit,
        strategy=strategy,
        device=f"GPU x{gpus}" if gpus else "CPU",
    )


@contextmanager
def precision(mixed: bool) -> Iterator[None]:
    """Build layers under ``mixed_float16`` (or ``float32``); restores the previous policy.

    The output layer pins float32 itself, so probabilities and the loss stay in float32;
    Keras wraps the optimizer in loss scaling when it compiles under the mixed policy.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
