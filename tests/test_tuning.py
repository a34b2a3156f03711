"""Optuna studies on generated images: nested runs, pruning, resume after a kill, scale-out on
PostgreSQL, and bad input. Real Optuna, real MLflow, real PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import ROOT, write_cifake
from mlflow.tracking import MlflowClient

from cifake_mlflow.registry.gate import CHAMPION
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.tuning.config import TuneConfig
from cifake_mlflow.tuning.study import (
    RUN_ID_ATTR,
    TuningError,
    _plots,
    load_search_space,
    open_study,
    run_study,
    varied_params,
)

PG_HOST = "127.0.0.1"


class PruneTrialOne(optuna.pruners.BasePruner):
    """A real Optuna pruner that prunes trial 1 at its first report (deterministic test)."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 1


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(
        "dropout: {low: 0.1, high: 0.5}\nlearning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}\n"
    )
    return path


@pytest.fixture
def tiny_cifake(tmp_path: Path) -> Path:
    return write_cifake(tmp_path / "cifake", {"train": 40, "test": 16}, seed=2)


def base_config(data: Path, **changes: object) -> TrainConfig:
    values: dict[str, object] = {
        "data": str(data),
        "weights": "none",
        "image_size": 32,
        "epochs": 2,
        "batch_size": 16,
        "experiment": "tune-test",
    }
    values.update(changes)
    return TrainConfig(**values)


def runs_of(experiment: str) -> list[mlflow.entities.Run]:
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_three_trial_study_nests_runs_prunes_and_registers(
    tracking: str, cache_dir: Path, tiny_cifake: Path, space_file: Path, tmp_path: Path
) -> None:
    tune = TuneConfig(
        study_name="s3",
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        n_trials=3,
        search_space=str(space_file),
    )
    result = run_study(base_config(tiny_cifake), tune, pruner=PruneTrialOne(), verbose=0)
    runs = runs_of("tune-test")
    parent = next(r for r in runs if r.info.run_id == result.parent_run_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    assert by_trial[1].info.status == "KILLED"
    assert by_trial[1].data.tags["optuna.state"] == "PRUNED"
    for number in (0, 2):
        assert by_trial[number].info.status == "FINISHED"
        assert by_trial[number].data.tags["optuna.state"] == "COMPLETE"
        assert "test_accuracy" in by_trial[number].data.metrics
    for trial in result.study.trials:
        run = by_trial[trial.number]
        assert trial.user_attrs[RUN_ID_ATTR] == run.info.run_id
        assert run.data.params["dropout"] == str(trial.params["dropout"])
        assert "startup_seconds" not in run.data.metrics  # a process start-up, not a trial's
    assert parent.info.status == "FINISHED"
    best = result.best_trial
    assert parent.data.params["best_dropout"] == str(best.params["dropout"])
    assert parent.data.metrics["best_val_roc_auc"] == pytest.approx(best.value)
    artifacts = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "optuna")}
    assert "optuna/optimization_history.png" in artifacts
    assert {"optuna/slice.png", "optuna/parallel_coordinate.png"} <= artifacts
    assert result.decision is not None and result.decision.alias == CHAMPION
    version = MlflowClient().get_model_version_by_alias("cifake-detector", CHAMPION)
    assert version.tags["optuna.trial"] == str(best.number)
    assert version.tags["run_id"] == best.user_attrs[RUN_ID_ATTR]
    assert mlflow.pyfunc.load_model("models:/cifake-detector@champion") is not None


def tune_command(data: Path, storage: str, space: Path, n_trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "tuning" / "tune.py"),
        "--data",
        str(data),
        "--weights",
        "none",
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--experiment",
        "tune-test",
        "--storage",
        storage,
        "--search-space",
        str(space),
        "--n-trials",
        str(n_trials),
        "--pruner",
        "none",
        "--register",
        "false",
        *extra,
    ]


def has_running_trial(storage: str, study_name: str) -> bool:
    """True once the study has a running trial whose MLflow run exists."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return False
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    return bool(running and RUN_ID_ATTR in running[0].user_attrs)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_study_resumes_without_running_leftovers(
    tracking: str, cache_dir: Path, tiny_cifake: Path, space_file: Path, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    command = tune_command(
        tiny_cifake,
        storage,
        space_file,
        2,
        "--epochs",
        "4",
        "--heartbeat-interval",
        "1",
        "--study-name",
        "resume",
    )
    worker = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ}
    )

    try:
        wait_for(lambda: has_running_trial(storage, "resume"), 300, "a running trial")
        time.sleep(3)  # mid-epoch
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    time.sleep(3)  # past the heartbeat grace period (2 x 1 s)
    done = subprocess.run(  # the same command again: it resumes the study
        command,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="resume", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # the killed trial, not lost
    runs = runs_of("tune-test")
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    failed = next(t for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert mlflow.get_run(failed.user_attrs[RUN_ID_ATTR]).info.status == "FAILED"


# -- PostgreSQL ------------------------------------------------------------------------------
@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database; skips (or fails where CI requires it) without a server."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(
            host=PG_HOST,
            port=5432,
            user="postgres",
            dbname="postgres",
            connect_timeout=3,
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {PG_HOST}:5432 ({exc})"
        if os.environ.get("CIFAKE_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"cifake_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@{PG_HOST}:5432/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """`mlflow server` with a PostgreSQL backend store, as the README sets it up."""
    name = postgres_url.rsplit("/", 1)[1] + "_mlflow"
    backend = f"postgresql://postgres@{PG_HOST}:5432/{name}"
    import psycopg

    admin = psycopg.connect(
        host=PG_HOST, port=5432, user="postgres", dbname="postgres", autocommit=True
    )
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {backend.rsplit('/', 1)[1]}")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            (tmp_path / "server-artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def up() -> bool:
            try:
                return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
            except OSError:
                return False

        wait_for(up, 120, "mlflow server")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {backend.rsplit('/', 1)[1]} WITH (FORCE)")
        admin.close()


def test_two_workers_share_one_postgres_study(
    postgres_url: str,
    mlflow_server: str,
    cache_dir: Path,
    tiny_cifake: Path,
    space_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    optuna.create_study(study_name="shared", storage=postgres_url, direction="maximize")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    command = tune_command(
        tiny_cifake, postgres_url, space_file, 4, "--epochs", "1", "--study-name", "shared"
    )
    workers = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 4
    assert len({t.number for t in finished}) == 4
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    runs = runs_of("tune-test")
    children = [r for r in runs if "optuna.trial" in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == sorted(
        t.number for t in study.trials
    )
    assert {t.user_attrs[RUN_ID_ATTR] for t in finished} <= {r.info.run_id for r in children}
    parents = [r for r in runs if r.data.tags.get("task") == "study"]
    assert len(parents) == 2
    assert all(r.info.status == "FINISHED" for r in runs)


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "declares no parameters"),
        ("dropout: {low: 0.5, high: 0.1}", "empty or inverted range"),
        ("dropout: {low: 0.3, high: 0.3}", "empty or inverted range"),
        ("batch_size: {choices: []}", "empty choices"),
        ("learning_rate: {low: 0, high: 0.1, log: true}", "log range needs low > 0"),
        ("colour: {low: 1, high: 2}", "not a training option"),
    ],
)
def test_bad_search_space_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(TuningError, match=message):
        load_search_space(path)


def test_unreachable_database_is_a_clear_error(
    tracking: str, tiny_cifake: Path, space_file: Path
) -> None:
    tune = TuneConfig(
        storage="postgresql://postgres@127.0.0.1:1/none", search_space=str(space_file)
    )
    with pytest.raises(TuningError, match="cannot open Optuna storage"):
        run_study(base_config(tiny_cifake), tune)
    assert runs_of("tune-test") == []  # nothing started


def test_existing_study_with_other_space_or_direction_is_refused(
    tracking: str, tiny_cifake: Path, space_file: Path, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="other", storage=storage, direction="minimize")
    tune = TuneConfig(study_name="other", storage=storage, search_space=str(space_file))
    with pytest.raises(TuningError, match="direction minimize"):
        run_study(base_config(tiny_cifake), tune)
    study = optuna.create_study(study_name="spaced", storage=storage, direction="maximize")
    study.set_user_attr("search_space", "[]")
    tune = TuneConfig(study_name="spaced", storage=storage, search_space=str(space_file))
    with pytest.raises(TuningError, match="different search space"):
        run_study(base_config(tiny_cifake), tune)


def test_resuming_with_other_fixed_settings_is_refused(
    tracking: str, tiny_cifake: Path, space_file: Path, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tune = TuneConfig(study_name="fixed", storage=storage, search_space=str(space_file))
    space = load_search_space(space_file)
    open_study(tune, space, base=base_config(tiny_cifake))
    open_study(tune, space, base=base_config(tiny_cifake, run_name="other-name"))  # free
    with pytest.raises(TuningError, match=r"image_size: 32 -> 64"):
        open_study(tune, space, base=base_config(tiny_cifake, image_size=64))


def test_searching_frozen_depth_from_scratch_is_refused(
    tracking: str, tiny_cifake: Path, tmp_path: Path
) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("unfrozen_layers: {low: 10, high: 154}\n")
    tune = TuneConfig(storage=f"sqlite:///{tmp_path / 'optuna.db'}", search_space=str(path))
    with pytest.raises(TuningError, match="random features"):
        run_study(base_config(tiny_cifake), tune)
    shipped = load_search_space(ROOT / "tuning" / "search_space_scratch.yaml")
    assert "unfrozen_layers" not in {p.name for p in shipped}
    assert "unfrozen_layers" in {
        p.name for p in load_search_space(ROOT / "tuning" / "search_space.yaml")
    }


def test_ctrl_c_leaves_no_running_runs(
    tracking: str, cache_dir: Path, tiny_cifake: Path, space_file: Path, tmp_path: Path
) -> None:
    """SIGINT (Ctrl-C) mid-trial: the trial's and the study's runs end KILLED, trial FAIL."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    command = tune_command(
        tiny_cifake, storage, space_file, 2, "--epochs", "4", "--study-name", "interrupt"
    )
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    try:
        wait_for(lambda: has_running_trial(storage, "interrupt"), 300, "a running trial")
        time.sleep(2)
        worker.send_signal(signal.SIGINT)
        worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode != 0
    runs = runs_of("tune-test")
    assert runs and {r.info.status for r in runs} == {"KILLED"}
    study = optuna.load_study(study_name="interrupt", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def log_concurrently(run_ids: list[str], meta: object, attempts: int) -> list[Exception]:
    """Every run logs ``meta`` at the same instant (one thread each); the errors raised."""
    import threading

    from cifake_mlflow.tracking.runs import log_input_once

    barrier, errors = threading.Barrier(len(run_ids)), []

    def log(run_id: str) -> None:
        barrier.wait()
        try:
            log_input_once(meta, "training", run_id, attempts=attempts)
        except Exception as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=log, args=(r,)) for r in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_parallel_workers_can_log_the_same_dataset(postgres_url: str) -> None:
    """MLflow's check-then-insert of a dataset races between workers; the retry absorbs it."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    mlflow.set_tracking_uri(postgres_url)
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("race")
    source = HTTPDatasetSource("https://example.invalid/cifake")
    for round_ in range(3):
        runs = [client.create_run(experiment).info.run_id for _ in range(6)]
        meta = MetaDataset(source=source, name="cifake-training", digest=f"d{round_}")
        assert log_concurrently(runs, meta, attempts=4) == []
        for run_id in runs:
            inputs = client.get_run(run_id).inputs.dataset_inputs
            assert [d.dataset.digest for d in inputs] == [f"d{round_}"]


def test_a_study_can_tune_for_robustness(
    tracking: str, cache_dir: Path, tiny_cifake: Path, tmp_path: Path
) -> None:
    """--metric val_robust_roc_auc: trials search robust_augment, scored on one fixed suite."""
    tune = TuneConfig(
        study_name="robust",
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        n_trials=2,
        search_space=str(ROOT / "tuning" / "search_space_robust.yaml"),
        metric="val_robust_roc_auc",
        register=False,
    )
    with pytest.raises(TuningError, match="val_robust_roc_auc is measured only with"):
        run_study(base_config(tiny_cifake, epochs=1), tune, verbose=0)
    # log_model=False as well: this study compares metrics only (and skips two model exports).
    base = base_config(tiny_cifake, epochs=1, val_robustness="jpeg50,noise0.05", log_model=False)
    result = run_study(base, tune, pruner=optuna.pruners.NopPruner(), verbose=0)
    assert [t.state for t in result.study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in result.study.trials:
        run = mlflow.get_run(trial.user_attrs[RUN_ID_ATTR])
        assert "model_uri" not in run.data.tags and trial.user_attrs["model_uri"] == ""
        logged = MlflowClient().search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
        )
        assert list(logged) == []
        metrics = run.data.metrics
        per_change = [metrics[f"val_robust_{n}_roc_auc"] for n in ("jpeg50", "noise0.05")]
        assert trial.value == pytest.approx(sum(per_change) / 2)
        assert metrics["best_val_robust_roc_auc"] == pytest.approx(trial.value)
        assert 0.0 <= metrics["val_robust_noise0.05_fpr"] <= 1.0
    assert {t.params["robust_augment"] for t in result.study.trials} <= {
        "none", "jpeg50,blur1", "jpeg50,blur1,noise0.02,downup0.5"
    }  # fmt: skip


def test_a_study_that_logs_no_models_cannot_register(
    tracking: str, tiny_cifake: Path, space_file: Path, tmp_path: Path
) -> None:
    tune = TuneConfig(storage=f"sqlite:///{tmp_path / 'optuna.db'}", search_space=str(space_file))
    with pytest.raises(TuningError, match="--register false"):
        run_study(base_config(tiny_cifake, log_model=False), tune)
    assert not (tmp_path / "optuna.db").exists()  # refused before the study was created


def test_an_interrupt_swallowed_inside_the_block_still_stops_the_work() -> None:
    """Python drops an exception raised in a destructor: a Ctrl-C that lands during garbage
    collection must still end the run (as KILLED) when its block is over, not be lost."""
    from cifake_mlflow.training.run import signals_as_interrupt

    with pytest.raises(KeyboardInterrupt), signals_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
        except KeyboardInterrupt:
            pass  # what Python does to it inside a __del__
    with signals_as_interrupt():  # a new block starts clean
        pass


@pytest.mark.fast
def test_study_plots_leave_out_parameters_that_never_varied() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: t.suggest_float("lr", 0, 1) + t.suggest_categorical("batch", [64]), n_trials=3
    )
    assert varied_params(study) == ["lr"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # matplotlib's zero-width axis warning
        drawn = {name: plot(study) for name, plot in _plots(varied_params(study)).items()}
    assert sorted(drawn) == [
        "optimization_history",
        "parallel_coordinate",
        "param_importances",
        "slice",
    ]
