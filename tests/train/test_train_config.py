"""Typed run configuration: files, command-line overrides, pickling (P12)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epochal import Error
from epochal._errors import UsageError
from epochal.train.config import (
    DataConfig,
    OptimConfig,
    RunConfig,
    TrainerConfig,
    from_dict,
    load_file,
    parse,
    save_config,
    to_dict,
)

configs = st.builds(
    RunConfig,
    run_dir=st.text(min_size=1, max_size=20),
    seed=st.integers(0, 2**64 - 1),
    data=st.builds(
        DataConfig,
        batch_size=st.integers(1, 512),
        augment=st.booleans(),
        val=st.none() | st.just("x.npz"),
    ),
    optim=st.builds(OptimConfig, lr=st.floats(1e-6, 1.0), name=st.sampled_from(["adamw", "sgd"])),
    trainer=st.builds(
        TrainerConfig,
        max_steps=st.none() | st.integers(1, 10**6),
        grad_clip=st.none() | st.floats(0.1, 10),
    ),
)


@given(configs)
def test_config_round_trips_through_pickle_json_and_dict(config: RunConfig) -> None:
    """P12: a config is plain data: it pickles (DDP, spawn) and survives JSON."""
    assert pickle.loads(pickle.dumps(config)) == config
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(config)))) == config


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("run.yaml", "seed: 3\noptim:\n  lr: 1\ntrainer:\n  max_steps: 20\n"),
        ("run.json", '{"seed": 3, "optim": {"lr": 1}, "trainer": {"max_steps": 20}}'),
        ("run.toml", "seed = 3\n[optim]\nlr = 1\n[trainer]\nmax_steps = 20\n"),
    ],
)
def test_config_file_then_command_line_overrides(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    config = parse(
        RunConfig, [str(path), "--optim.name", "sgd", "--trainer.max-steps", "30"], prog="t"
    )
    assert config.seed == 3
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.optim.name == "sgd"
    assert config.trainer.max_steps == 30  # the flag wins over the file
    assert config.data == DataConfig()  # untouched sections keep their defaults
    assert parse(RunConfig, ["--config", str(path)], prog="t").trainer.max_steps == 20


def test_saved_config_json_reads_back_as_a_config_file(tmp_path: Path) -> None:
    config = RunConfig(seed=11, trainer=TrainerConfig(epochs=2, keep_best="val_accuracy:max"))
    save_config(config, tmp_path / "config.json")
    assert parse(RunConfig, [str(tmp_path / "config.json")], prog="t") == config


def test_bad_configs_say_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"optim": {"learning_rate": 1}}')
    with pytest.raises(
        Error, match=r"unknown config key\(s\) \['optim.learning_rate'\]; valid keys here"
    ):
        parse(RunConfig, [str(tmp_path / "bad.json")], prog="t")
    with pytest.raises(Error, match="does not exist"):
        load_file(tmp_path / "missing.yaml")
    (tmp_path / "x.ini").write_text("")
    with pytest.raises(Error, match=r"must end in \.json, \.toml, \.yaml or \.yml"):
        load_file(tmp_path / "x.ini")
    with pytest.raises(Error, match="keep_best must look like"):
        TrainerConfig(keep_best="val_loss")


def test_the_seed_takes_the_loaders_range_and_is_refused_before_any_work() -> None:
    assert parse(RunConfig, ["--seed", str(2**64 - 1)], prog="t").seed == 2**64 - 1
    for bad in (-1, 2**64):
        # a UsageError: the command line prints one line and exits 2
        with pytest.raises(UsageError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
            parse(RunConfig, ["--seed", str(bad)], prog="t")


@pytest.mark.parametrize(
    "argv",
    [
        ["{file}", "--optim.lr", "0.02"],
        ["--optim.lr", "0.02", "{file}"],
        ["--trainer.no-progress", "{file}", "--optim.lr", "0.02"],
        ["--config", "{file}", "--optim.lr=0.02"],
    ],
    ids=["first", "last", "middle", "--config"],
)
def test_the_config_file_may_come_anywhere(tmp_path: Path, argv: list[str]) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("seed: 3\ntrainer:\n  max_steps: 20\n")
    config = parse(RunConfig, [a.replace("{file}", str(path)) for a in argv], prog="t")
    assert (config.seed, config.trainer.max_steps, config.optim.lr) == (3, 20, 0.02)


def test_a_flag_value_that_looks_like_a_file_is_a_value(tmp_path: Path) -> None:
    config = parse(RunConfig, ["--run-dir", "runs/a.yaml", "--data.train", "x.npz"], prog="t")
    assert (config.run_dir, config.data.train) == ("runs/a.yaml", "x.npz")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("run.toml", '[data]\nval = "None"\n'),
        ("run.yaml", "data:\n  val: null\n"),
        ("run.json", '{"data": {"val": null}}'),
    ],
)
def test_every_file_format_can_say_no_validation_set(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    assert parse(RunConfig, [str(tmp_path / name)], prog="t").data.val is None
    assert parse(RunConfig, ["--data.val", "None"], prog="t").data.val is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run_dir = 5\n", "config key 'run_dir' must be a string (quote it), got 5 (int)"),
        ("seed = 1.5\n", "config key 'seed' must be a whole number, got 1.5"),
        ('[trainer]\namp = "yes"\n', "config key 'trainer.amp' must be true or false"),
        ('[optim]\nname = "adam"\n', "config key 'optim.name' must be 'adamw' or 'sgd'"),
        ('[trainer]\nmax_steps = "x"\n', 'trainer.max_steps\' must be a whole number or "None"'),
        ("data = 3\n", "config key 'data' must be a table of settings, got 3"),
        ("[trainer]\nmax_steps = -1\n", "trainer.max_steps must be >= 1 or None, got -1"),
    ],
)
def test_wrong_types_in_a_config_file_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "run.toml").write_text(text)
    with pytest.raises(UsageError) as info:
        parse(RunConfig, [str(tmp_path / "run.toml")], prog="t")
    assert message in str(info.value)


def test_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("seed: 1\noptim: [lr: 2\n")
    with pytest.raises(UsageError) as info:
        load_file(tmp_path / "bad.yaml")
    assert "\n" not in str(info.value) and "line 3, column 1" in str(info.value)


def test_help_shows_field_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(RunConfig, ["--help"], prog="epochal train")
    assert exit_info.value.code == 0
    assert "Records per batch PER RANK" in capsys.readouterr().out


def test_config_with_paths_is_plain_data_and_survives_a_checkpoint(tmp_path: Path) -> None:
    """P12: a Path field must not make the checkpoint unloadable (weights_only torch.load)."""
    import dataclasses

    import torch

    import epochal
    from epochal.train.config import from_dict, to_dict

    @dataclasses.dataclass(kw_only=True)
    class WithPath:
        run_dir: Path = Path("runs/x")
        maybe: Path | None = None

    cfg = WithPath(maybe=Path("a/b"))
    plain = to_dict(cfg)
    assert plain == {"run_dir": "runs/x", "maybe": "a/b"}
    assert from_dict(WithPath, plain) == cfg
    ckpt = epochal.Checkpointer(tmp_path, config=cfg)
    model = torch.nn.Linear(2, 2)
    ckpt.save(1, model=model)
    meta = epochal.Checkpointer(tmp_path).restore(model=model)
    assert meta is not None and meta["config"] == plain
