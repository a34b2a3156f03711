"""What the console shows: no TensorFlow start-up lines unless asked, no upstream warnings."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifake_mlflow import console

pytestmark = pytest.mark.fast

IMPORT = (
    "import cifake_mlflow, tensorflow as tf; tf.constant(1); import cifake_mlflow.serving.pyfunc"
)


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != console.USER_LOG_LEVEL}
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tensorflow_imports_quietly_unless_the_user_asks() -> None:
    quiet = _run(IMPORT + "; from cifake_mlflow.training.accelerate import gpu_count; gpu_count()")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", quiet.stderr  # no C++ log line, no Python warning
    loud = _run(IMPORT, TF_CPP_MIN_LOG_LEVEL="0")
    assert loud.returncode == 0
    assert "I0000" in loud.stderr or "oneDNN" in loud.stderr  # the lines exist; shown on request


OPTUNA_EXPERIMENTAL = """
import cifake_mlflow, optuna
from optuna.visualization import matplotlib as vis
storage = optuna.storages.RDBStorage("sqlite:///{db}", heartbeat_interval=60)
study = optuna.create_study(storage=storage)
optuna.storages.fail_stale_trials(study)
study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
vis.plot_optimization_history(study)
"""


def test_optuna_features_a_study_uses_warn_nothing(tmp_path: Path) -> None:
    result = _run(OPTUNA_EXPERIMENTAL.format(db=tmp_path / "optuna.db"))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_what_a_failing_block_wrote_is_replayed(
    capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(console.USER_LOG_LEVEL, raising=False)
    with console.native_stderr_quiet():
        os.write(2, b"hidden on success\n")
    assert "hidden on success" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), console.native_stderr_quiet():
        os.write(2, b"needed to diagnose\n")
        raise RuntimeError("boom")
    assert "needed to diagnose" in capfd.readouterr().err


def test_keras_progress_is_a_bar_on_a_terminal_and_a_line_per_epoch_otherwise() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert console.verbosity(Terminal()) == 1
    assert console.verbosity(io.StringIO()) == 2
