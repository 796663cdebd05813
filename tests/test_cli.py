"""The ``epochal`` command line: help everywhere, one-line errors, real runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from epochal.cli import COMMANDS, EXAMPLES, main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "epochal", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_examples_and_no_internal_wording(name):
    result = _run(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    examples = result.stdout.split("examples:\n", 1)[1].splitlines()
    assert 1 <= len(examples) <= 2 and all(f"epochal {name}" in line for line in examples)
    assert examples == [f"  {line}" for line in EXAMPLES[name]]
    for internal in ("issue #", "Options of", "{None}", "PROBLEMS.md"):
        assert internal not in result.stdout, internal


def test_train_usage_line_shows_its_config_argument():
    assert _run("train", "--help").stdout.startswith("usage: epochal train [CONFIG]")


def test_unknown_command_is_one_line(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'frobnicate'" in err


def test_user_error_is_one_line_without_traceback():
    result = _run("bench", "--records", "10", "--batch-size", "256")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("epochal bench: error: need batch_size >= 1, records")


def test_bench_runs_small():
    result = _run(
        "bench",
        "--records",
        "3000",
        "--naive-samples",
        "1000",
        "--repeats",
        "1",
        "--transform-batches",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "order cost" in result.stdout and "resume latency" in result.stdout
    # a line per measurement while it runs (the table comes only at the end)
    steps = [line for line in result.stderr.splitlines() if line.startswith("epochal bench: [")]
    assert len(steps) == 8 and steps[-1].startswith("epochal bench: [8/8] order memory")
