"""GPU options on a CPU-only machine: mixed precision, XLA, and MirroredStrategy over two
logical CPU devices (TensorFlow's own way to test multi-device code without GPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, write_cifake

from cifake_mlflow.config import ConfigError
from cifake_mlflow.modeling.mobilenet import build_model
from cifake_mlflow.training import accelerate
from cifake_mlflow.training.config import TrainConfig


def test_auto_is_off_on_cpu_and_switches_are_explicit() -> None:
    assert accelerate.gpu_count() == 0, "these tests describe a CPU-only machine"
    auto = accelerate.resolve(TrainConfig(weights="none"))
    assert (auto.mixed_precision, auto.jit_compile, auto.replicas) == (False, False, 1)
    assert auto.params() == {
        "resolved_mixed_precision": "False",
        "resolved_jit_compile": "False",
        "replicas": "1",
        "device": "CPU",
    }
    forced = accelerate.resolve(TrainConfig(weights="none", mixed_precision="on", jit_compile="on"))
    assert forced.mixed_precision and forced.jit_compile
    with pytest.raises(ConfigError, match="distribute"):
        TrainConfig(distribute="horovod")


def test_mixed_precision_computes_in_float16_and_answers_in_float32() -> None:
    cfg = TrainConfig(weights="none", image_size=32)
    with accelerate.precision(True):
        model = build_model(cfg)
    assert keras.config.dtype_policy().name == "float32", "the policy must be restored"
    dense = model.get_layer("dense")
    assert dense.compute_dtype == "float16" and dense.variable_dtype == "float32"
    assert model.get_layer("prob_fake").compute_dtype == "float32"
    out = model(np.zeros((2, 32, 32, 3), np.float32), training=False)
    assert out.dtype == tf.float32


def run_isolated(script: str, tmp_path: Path) -> dict:
    """Run ``script`` in a fresh interpreter (TensorFlow's devices are fixed at start-up)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_mirrored_strategy_trains_over_two_devices(tmp_path: Path) -> None:
    data = write_cifake(tmp_path / "cifake", {"train": 64, "test": 16}, seed=2)
    script = f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import mlflow
        from cifake_mlflow.training.config import TrainConfig
        from cifake_mlflow.training.run import train_and_log
        mlflow.set_tracking_uri("sqlite:///{tmp_path}/mlflow.db")
        cfg = TrainConfig(data="{data}", weights="none", image_size=32, epochs=1, batch_size=8,
                          val_fraction=0.25, distribute="mirrored", cache_dir="{tmp_path}/cache")
        summary = train_and_log(cfg, verbose=0)
        run = mlflow.get_run(summary.run_id)
        kernel = summary.train.model.get_layer("mobilenetv2_base").get_layer("Conv1").kernel
        copies = [v.numpy() for v in kernel.value.values]
        in_sync = float(abs(copies[0] - copies[1]).max())
        try:
            train_and_log(cfg.replace(jit_compile="on"), verbose=0)
            refused = ""
        except ValueError as exc:
            refused = str(exc)
        try:
            train_and_log(cfg.replace(batch_size=9), verbose=0)
        except ValueError as exc:
            refused += str(exc)
        print(json.dumps({{"params": run.data.params, "metrics": run.data.metrics,
                          "refused": refused, "copies": len(copies), "in_sync": in_sync}}))
    """  # noqa: E501
    out = run_isolated(script, tmp_path)
    assert out["params"]["replicas"] == "2" and out["params"]["distribute"] == "mirrored"
    assert "jit_compile='on'" in out["refused"] and "XLA" in out["refused"]
    assert "batch_size=9: a multiple of the 2 replicas" in out["refused"]
    assert np.isfinite(out["metrics"]["loss"]) and np.isfinite(out["metrics"]["test_roc_auc"])
    # One copy of each weight per device, identical after training: gradients were all-reduced.
    assert out["copies"] == 2 and out["in_sync"] == 0.0


def test_xla_compiled_training_runs(tracking: str, cache_dir: Path, tmp_path: Path) -> None:
    import mlflow

    from cifake_mlflow.training.run import train_and_log

    data = write_cifake(tmp_path / "cifake", {"train": 32, "test": 8}, seed=4)
    cfg = TrainConfig(
        data=str(data), weights="none", image_size=32, epochs=1, batch_size=16, jit_compile="on"
    )
    run = mlflow.get_run(train_and_log(cfg, verbose=0).run_id)
    assert run.data.params["resolved_jit_compile"] == "True"
    assert np.isfinite(run.data.metrics["loss"])
