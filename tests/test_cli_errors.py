"""Every refused command: one line on stderr, no traceback, its exit code, nothing changed.

Each case builds what the command is pointed at (a run directory of another run, a demo
trained on other data, a bad config file, ...), snapshots the whole directory, runs the
command and checks that every file is byte-identical afterwards: a refusal happens before
anything is written. Most cases run in-process through ``epochal.cli.main`` (the same code
path as the console script, torch imported once); a few run the real console script.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import epochal
from epochal.cli import COMMANDS, main
from epochal.train.config import RunConfig, save_config
from epochal.train.demo import DemoConfig, data_paths, run_config


def _snapshot(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file, and every directory, under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        out[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def _fake_run(run_dir: Path, config: RunConfig, step: int = 8) -> None:
    """A run directory as a finished run leaves it: config.json and a checkpoint commit.

    The checks under test read only these (the commit's name gives the step), so no model
    needs training here."""
    (run_dir / "checkpoints").mkdir(parents=True)
    save_config(config, run_dir / "config.json")
    (run_dir / "checkpoints" / f"step_{step:012d}.json").write_text("{}\n")
    (run_dir / "metrics.jsonl").write_text('{"step": 8, "train/loss": 1.0}\n')


def _train_run(tmp: Path) -> list[str]:
    _fake_run(tmp / "run", RunConfig(run_dir=str(tmp / "run")))
    return []


def _demo_run(tmp: Path, num_train: int = 64, num_val: int = 32) -> DemoConfig:
    demo = DemoConfig(run_dir=str(tmp / "demo"), num_train=num_train, num_val=num_val)
    for split, n in (("train", num_train), ("val", num_val)):
        images = np.zeros((n, 3, 8, 8), dtype=np.uint8)
        records = ({"image": im, "label": i % 4} for i, im in enumerate(images))
        epochal.write(records, data_paths(demo)[split])
    _fake_run(tmp / "demo", run_config(demo, data_paths(demo)))
    return demo


def _write(name: str, text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).write_text(text)

    return setup


def _nothing(tmp: Path) -> None:
    return None


_TOKEN_TEXTS = '{"text": "a"}\n{"text": "b x"}\n'
_TOKEN_BUILD = ["build", "{tmp}/c.jsonl", "{tmp}/s", "--vocab-size", "300", "--tokenizer"]

# (id, setup(tmp), argv with {tmp} filled in, exit code, words the one line must contain)
CASES = [
    ("demo-zero-images", _nothing, ["demo", "--num-train", "0"], 2, "--num-train must be >= 1"),
    (
        "demo-run-dir-is-a-file",
        _write("afile", "x"),
        ["demo", "--run-dir", "{tmp}/afile"],
        2,
        "is a file",
    ),
    (
        "demo-on-a-train-run",
        _train_run,
        ["demo", "--run-dir", "{tmp}/run"],
        2,
        "data.train: 'shapes:train' ->",
    ),
    (
        "demo-with-other-data-sizes",
        _demo_run,
        ["demo", "--run-dir", "{tmp}/demo", "--num-train", "48", "--num-val", "32"],
        2,
        "--num-train 48 (the run has 64)",
    ),
    (
        "train-other-num-classes",
        _train_run,
        ["train", "--run-dir", "{tmp}/run", "--model.num-classes", "3"],
        2,
        "model.num_classes: 4 -> 3",
    ),
    (
        "train-fewer-classes-than-labels",
        _nothing,
        ["train", "--run-dir", "{tmp}/new", "--model.num-classes", "2", "--device", "cpu"],
        2,
        "has labels 0..3 but model.num_classes is 2",
    ),
    (
        "train-bad-yaml",
        _write("bad.yaml", "seed: 1\noptim: [lr: 2\n"),
        ["train", "{tmp}/bad.yaml"],
        2,
        "cannot read config file",
    ),
    (
        "train-toml-run-dir-is-a-number",
        _write("run.toml", "run_dir = 5\n"),
        ["train", "{tmp}/run.toml"],
        2,
        "config key 'run_dir' must be a string (quote it), got 5 (int)",
    ),
    (
        "train-unknown-toml-key",
        _write("run.toml", "[optim]\nrate = 0.1\n"),
        ["train", "{tmp}/run.toml"],
        2,
        "unknown config key(s) ['optim.rate']",
    ),
    (
        "train-negative-max-steps",
        _nothing,
        ["train", "--trainer.max-steps", "-1"],
        2,
        "trainer.max_steps must be >= 1",
    ),
    (
        "train-missing-config-file",
        _nothing,
        ["train", "{tmp}/nope.yaml"],
        2,
        "does not exist",
    ),
    (
        "train-two-config-files",
        _write("a.yaml", "seed: 1\n"),
        ["train", "{tmp}/a.yaml", "{tmp}/a.yaml"],
        2,
        "give one config file",
    ),
    ("train-unknown-flag", _nothing, ["train", "--optim.rate", "1"], 2, "Unrecognized options"),
    ("train-bad-float", _nothing, ["train", "--optim.lr", "abc"], 2, "--optim.lr"),
    (
        "verify-resume-zero-kills",
        _nothing,
        ["verify-resume", "--kills", "0", "--workdir", "{tmp}/vr"],
        2,
        "--kills must be >= 1",
    ),
    (
        "verify-resume-too-many-kills",
        _nothing,
        ["verify-resume", "--kills", "30", "--workdir", "{tmp}/vr"],
        2,
        "kill",
    ),
    (
        "bench-unreadable-arrays",
        _write("small.npy", ""),
        ["bench", "{tmp}/small.npy"],
        2,
        "cannot read",
    ),
    ("lint-unknown-rule", _nothing, ["lint", "--select", "EPL999", "{tmp}"], 2, "EPL999"),
    # a tokenizer that cannot load is a bad input, not a bad argument: exit 1 (issue 17;
    # one that fails on a document: tests/store/test_store_tokens.py)
    *(
        (
            f"build-tokenizer-{name}",
            _write("c.jsonl", _TOKEN_TEXTS),
            [*_TOKEN_BUILD, spec],
            1,
            words,
        )
        for name, spec, words in [
            ("no-module", "no_such_module_x:encode", "cannot import 'no_such_module_x'"),
            ("import-fails", "_broken_tokenizer:encode", "RuntimeError: this module needs"),
            ("no-function", "_byte_tokenizer:nope", "has no attribute 'nope'"),
        ]
    ),
]


@pytest.mark.parametrize(
    ("setup", "argv", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refused_command_is_one_line_and_changes_nothing(
    tmp_path: Path, capsys, monkeypatch, setup, argv, code, words
) -> None:
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)  # a default run dir (runs/train) would land here
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"epochal {argv[0]}: error: "), err
    assert words in err, err
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [["demo", "--num-train", "0"], ["train", "bad.yaml"], ["verify-resume", "--kills", "0"]],
    ids=["demo", "train-yaml", "verify-resume"],
)
def test_the_console_script_prints_one_line_too(tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    result = subprocess.run(
        [sys.executable, "-m", "epochal", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # nothing created


@pytest.mark.slow
def test_verify_resume_timeout_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "epochal", "verify-resume", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "error" in x]
    assert "did not finish in 0.5s; give it more time with --timeout" in line


def test_write_to_a_file_path_is_an_epochal_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(epochal.Error, match="is a file; a store is a directory"):
        epochal.write([{"a": 1}], tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"


def _error_kinds() -> list[type[Exception]]:
    from epochal._errors import InvalidTypeError, InvalidValueError, OutOfRangeError, StateError
    from epochal.lint._engine import LintUsageError
    from epochal.store import CorruptStoreError, StoreError
    from epochal.train.checkpoint import CheckpointSaveError

    return [
        InvalidTypeError,
        InvalidValueError,
        OutOfRangeError,
        StateError,
        StoreError,
        CorruptStoreError,
        CheckpointSaveError,
        LintUsageError,
        epochal.Error,
    ]


@pytest.mark.parametrize("kind", _error_kinds(), ids=lambda kind: kind.__name__)
def test_every_error_kind_is_one_line_from_the_cli(kind, capsys, monkeypatch) -> None:
    """Whatever kind of epochal.Error a command raises while working, the CLI prints its
    message as one line (no traceback) and exits with 1."""

    def fails(argv: list[str]) -> int:
        message = "batch_size must be >= 1, got 0"
        raise (
            kind(message, Path("c.pt")) if kind.__name__ == "CheckpointSaveError" else kind(message)
        )

    module = type(sys)("_epochal_failing_command")
    module.main = fails  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(COMMANDS, "failing", (module.__name__, "a command that fails"))
    assert main(["failing"]) == 1
    assert capsys.readouterr().err == "epochal failing: error: batch_size must be >= 1, got 0\n"


def test_bad_arguments_raise_epochal_errors_that_are_also_the_builtin_kind(tmp_path) -> None:
    from epochal._errors import InvalidTypeError, InvalidValueError, OutOfRangeError

    cases: list[tuple[Callable[[], object], type[Exception], type[Exception], str]] = [
        (lambda: epochal.from_arrays(x=np.arange(3))[5], OutOfRangeError, IndexError, "5"),
        (lambda: epochal.make_order(0), InvalidValueError, ValueError, "n=0"),
        (
            lambda: epochal.make_order(4).index(np.array([0.5])),
            InvalidTypeError,
            TypeError,
            "dtype",
        ),
        (
            lambda: epochal.Checkpointer(tmp_path / "c", keep_last=0),
            InvalidValueError,
            ValueError,
            "keep_last",
        ),
        (
            lambda: epochal.Plan(num_records=10, batch_size=0),
            InvalidValueError,
            ValueError,
            "batch_size",
        ),
    ]
    for call, kind, builtin, words in cases:
        with pytest.raises(kind, match=words) as caught:
            call()
        assert isinstance(caught.value, epochal.Error) and isinstance(caught.value, builtin)


# raises of built-in exceptions left in src/ on purpose: internal invariants, or errors
# caught a few lines below and re-raised as an epochal.Error with the file named
_BUILTIN_RAISES_ALLOWED = {
    "_fetch.py": "whole batches",  # the fetcher is only called by the Loader itself
    "config.py": "_yaml_error",  # caught below, re-raised as UsageError naming the file
    "_blocks.py": "",  # the granule index parser: caught, re-raised as CorruptStoreError
    "seeding.py": "seed must be",  # the one seed rule is issue 16's item 2 (another branch)
}


def test_src_raises_no_builtin_error_for_bad_input() -> None:
    import re

    src = Path(epochal.__file__).parent
    found = []
    for path in sorted(src.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.search(r"raise (ValueError|TypeError|IndexError|KeyError)\(", line)
            allowed = _BUILTIN_RAISES_ALLOWED.get(path.name)
            if match and (allowed is None or allowed not in line):
                found.append(f"{path.relative_to(src)}:{number}: {line.strip()}")
    # order.py's seed and epoch checks move with the seed rule (issue 16 item 2)
    found = [f for f in found if not (f.startswith("order.py") and "must be an integer in" in f)]
    assert found == [], "raise an epochal.Error subclass (epochal._errors) instead:\n" + "\n".join(
        found
    )
