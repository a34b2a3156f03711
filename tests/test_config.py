"""TrainConfig: reference-design defaults, validation, text parsing and the MLproject contract."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

import pytest

from cifake_mlflow.cli import main
from cifake_mlflow.config import ConfigError, parse_value
from cifake_mlflow.training.config import MOBILENETV2_DEPTH, TrainConfig

pytestmark = pytest.mark.fast  # unit tests: the fast lane (pytest -m fast)

ROOT = Path(__file__).resolve().parents[1]
FIELD_NAMES = [f.name for f in dataclasses.fields(TrainConfig)]


def _assert_names(error: ConfigError, name: str, value: object) -> None:
    message = str(error)
    assert error.field == name
    assert name in message
    assert repr(value) in message or str(value) in message, message


# -- defaults ----------------------------------------------------------------------------------
def test_defaults_are_the_reference_design() -> None:
    cfg = TrainConfig()
    assert cfg.image_size == 160
    assert cfg.dropout == pytest.approx(0.3)
    assert cfg.dense_units == 128
    assert cfg.zoom == pytest.approx(0.2)
    assert cfg.rotation == pytest.approx(15.0)
    assert cfg.patience == 3
    assert cfg.weights == "imagenet"
    assert cfg.flip is True
    assert cfg.augment is True
    assert cfg.shift == 0  # the reference design does not translate


def test_auto_values_resolve_by_weights() -> None:
    pretrained = TrainConfig()
    scratch = TrainConfig(weights="none")
    assert pretrained.pretrained and not scratch.pretrained
    assert pretrained.trainable_base_layers == 30
    assert scratch.trainable_base_layers == MOBILENETV2_DEPTH == 154
    assert pretrained.batchnorm_momentum == pytest.approx(0.999)
    assert scratch.batchnorm_momentum == pytest.approx(0.99)


def test_explicit_values_override_auto() -> None:
    cfg = TrainConfig(weights="none", unfrozen_layers=12, bn_momentum=0.9)
    assert cfg.trainable_base_layers == 12
    assert cfg.batchnorm_momentum == pytest.approx(0.9)


# -- validation --------------------------------------------------------------------------------
BAD_VALUES = [
    ("dropout", -0.1),
    ("dropout", 1.0),
    ("image_size", 31),
    ("weights", "foo"),
    ("unfrozen_layers", MOBILENETV2_DEPTH + 1),
    ("unfrozen_layers", -1),
    ("epochs", 0),
    ("batch_size", 0),
    ("learning_rate", 0.0),
    ("val_fraction", 0.0),
    ("val_fraction", 1.0),
    ("zoom", 1.0),
    ("rotation", 200.0),
    ("shift", -1),
    ("shift", 17),
    ("threshold", 1.5),
    ("lr_schedule", "linear"),
    ("on_bad_file", "ignore"),
    ("max_train_images", 1),
    ("max_test_images", 1),
    ("stem_stride", 3),
    ("stem_stride", 0),
    ("block1_stride", 4),
    ("block1_stride", 0),
    ("alpha", 0.0),
    ("alpha", 0.6),  # no ImageNet weights file for this width
    ("weight_decay", -0.1),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_is_refused_naming_field_and_value(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{name: value})
    _assert_names(info.value, name, value)


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_is_refused_from_text_too(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_strings({name: str(value)})
    _assert_names(info.value, name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("epochs", "3"), ("epochs", True), ("image_size", 160.0), ("dropout", "0.3")],
)
def test_wrong_types_are_refused(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{name: value})
    _assert_names(info.value, name, value)


def test_missing_weights_file_is_refused(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.weights.h5")
    with pytest.raises(ConfigError) as info:
        TrainConfig(weights=missing)
    _assert_names(info.value, "weights", missing)


def test_existing_weights_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "base.weights.h5"
    path.write_bytes(b"not checked here")
    cfg = TrainConfig(weights=str(path))
    assert cfg.pretrained
    assert cfg.trainable_base_layers == 30
    assert cfg.batchnorm_momentum == pytest.approx(0.999)


def test_replace_validates() -> None:
    with pytest.raises(ConfigError):
        TrainConfig().replace(epochs=0)
    assert TrainConfig().replace(epochs=5).epochs == 5


# -- parsing text --------------------------------------------------------------------------------
def test_from_strings_parses_cli_text() -> None:
    cfg = TrainConfig.from_strings(
        {
            "epochs": "3",
            "learning_rate": "1e-3",
            "augment": "false",
            "unfrozen_layers": "12",
            "max_train_images": "all",
            "bn_momentum": "auto",
        }
    )
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.learning_rate == pytest.approx(0.001) and isinstance(cfg.learning_rate, float)
    assert cfg.augment is False
    assert cfg.unfrozen_layers == 12
    assert cfg.max_train_images is None
    assert cfg.bn_momentum is None
    assert cfg.batchnorm_momentum == pytest.approx(0.999)


@pytest.mark.parametrize(
    ("text", "weights", "expected"),
    [
        ("auto", "imagenet", 30),
        ("auto", "none", MOBILENETV2_DEPTH),
        ("all", "imagenet", MOBILENETV2_DEPTH),
        ("ALL", "imagenet", MOBILENETV2_DEPTH),
        ("12", "imagenet", 12),
        ("0", "none", 0),
    ],
)
def test_unfrozen_layers_words(text: str, weights: str, expected: int) -> None:
    cfg = TrainConfig.from_strings({"unfrozen_layers": text, "weights": weights})
    assert cfg.trainable_base_layers == expected


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("False", False), ("1", True)])
def test_bool_words(text: str, expected: bool) -> None:
    assert TrainConfig.from_strings({"flip": text}).flip is expected


def test_none_values_keep_defaults() -> None:
    assert TrainConfig.from_strings({"epochs": None, "dropout": None}) == TrainConfig()


def test_from_strings_refuses_unparsable_number() -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_strings({"epochs": "abc"})
    _assert_names(info.value, "epochs", "abc")


def test_from_strings_refuses_bad_bool() -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_strings({"augment": "maybe"})
    _assert_names(info.value, "augment", "maybe")


def test_from_strings_refuses_unknown_key() -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_strings({"epochs": "3", "learning_rat": "0.1"})
    _assert_names(info.value, "learning_rat", "0.1")


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(),
        TrainConfig(
            data="/some/where.tar.gz",
            epochs=7,
            learning_rate=3e-4,
            lr_schedule="cosine",
            weights="none",
            unfrozen_layers=12,
            bn_momentum=0.9,
            augment=False,
            flip=False,
            drop_duplicates=False,
            on_bad_file="skip",
            max_train_images=1000,
            max_test_images=200,
            threshold=0.25,
            cache_dir="/tmp/cifake-cache",
            run_name="my-run",
            label_smoothing=0.1,
        ),
        TrainConfig(unfrozen_layers=MOBILENETV2_DEPTH, learning_rate=1e-5),
    ],
    ids=["defaults", "changed", "all-layers"],
)
def test_to_params_round_trips(cfg: TrainConfig) -> None:
    params = cfg.to_params()
    assert set(params) == set(FIELD_NAMES)
    assert all(isinstance(v, str) for v in params.values())
    assert TrainConfig.from_strings(params) == cfg


# -- MLproject ---------------------------------------------------------------------------------
def entry_point(name: str) -> Any:
    """The entry point as MLflow itself reads it from the MLproject file."""
    from mlflow.projects import _project_spec

    return _project_spec.load_project(str(ROOT)).get_entry_point(name)


def test_mlproject_is_short_and_declares_only_training_fields() -> None:
    assert len((ROOT / "MLproject").read_text().splitlines()) < 60
    declared = set(entry_point("main").parameters)
    assert declared and declared <= set(FIELD_NAMES)


def test_mlproject_defaults_match_config() -> None:
    config = TrainConfig()
    for name, param in entry_point("main").parameters.items():
        assert parse_value(name, str(param.default), TrainConfig) == getattr(config, name), name


def test_mlproject_passes_undeclared_options_on_to_the_cli(tmp_path: Path) -> None:
    """MLflow renders an undeclared -P as --name value; the CLI reads it as its own option."""
    command = entry_point("main").compute_command(
        {"data": "some/data", "stem_stride": "1", "shift": "3", "tta": "flip"}, str(tmp_path)
    )
    args = shlex.split(command)
    assert args[:4] == ["python", "-m", "cifake_mlflow", "train"]
    assert "--stem_stride" in args and "--shift" in args
    context = main.make_context("cifake", list(args[3:]), resilient_parsing=True)
    name, command_obj, rest = main.resolve_command(context, list(args[3:]))
    parsed = command_obj.make_context(name, rest, parent=context)
    assert parsed.params["stem_stride"] == "1"
    assert parsed.params["shift"] == "3"
    assert parsed.params["tta"] == "flip"
    assert parsed.params["data"] == "some/data"


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"storage": "redis://127.0.0.1/0"}, "storage"),
        ({"storage": "optuna.db"}, "storage"),
        ({"n_trials": 0}, "n_trials"),
        ({"metric": "test_accuracy"}, "metric"),
        ({"model_name": " "}, "model_name"),
        ({"margin": -0.1}, "margin"),
        ({"pruner": "hyperband"}, "pruner"),
    ],
)
def test_tune_config_refuses_bad_values(changes: dict, name: str) -> None:
    from cifake_mlflow.tuning.config import TuneConfig

    with pytest.raises(ConfigError) as info:
        TuneConfig(**changes)
    assert info.value.field == name
    assert name in str(info.value)


# -- the CLI: one bad value of every kind of option, one line, exit 2 ---------------------------
@pytest.mark.parametrize(
    ("args", "option", "allowed"),
    [
        (["train", "--threshold", "model"], "--threshold", "a number (float)"),  # another's word
        (["train", "--epochs", "ten"], "--epochs", "a number (int)"),
        (["train", "--dropout", "1.5"], "--dropout", "[0, 1)"),
        (["train", "--augment", "maybe"], "--augment", "true or false"),
        (["train", "--lr-schedule", "wavy"], "--lr-schedule", "constant"),
        (["train", "--unfrozen-layers", "many"], "--unfrozen-layers", "'auto'"),
        (["train", "--target-fpr", "low"], "--target-fpr", "'none'"),
        (["train", "--robust-augment", "blur9"], "--robust-augment", "blur parameter"),
        (["train", "--weights", "nowhere.h5"], "--weights", "'imagenet', 'none'"),
        (["train", "--alpha", "0.6", "--weights", "imagenet"], "--alpha", "0.35"),
        (["evaluate", "--max-images", "few"], "--max-images", "'all'"),
        (["evaluate", "--threshold", "auto"], "--threshold", "'model'"),
        (["tune", "--pruner", "hyperband"], "--pruner", "median"),
        (["tune", "--gate-metric", "robust_x_accuracy"], "--gate-metric", "not a transformation"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option(
    args: list[str], option: str, allowed: str
) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: invalid {option} "), lines[0]
    assert allowed in lines[0]
    assert "Traceback" not in result.output


def test_run_name_names_both_strides_only_when_changed() -> None:
    """The MLflow UI tells the three MobileNetV2 variants apart by their run names."""
    from cifake_mlflow.tracking.runs import run_name

    def name(**strides: int) -> str:
        return run_name(TrainConfig(weights="none", image_size=32, **strides))

    assert name().startswith("mnv2-32px-none-")
    assert name(stem_stride=1).startswith("mnv2-32px-stem1-none-")
    assert name(stem_stride=1, block1_stride=1).startswith("mnv2-32px-stem1-b1s1-none-")
