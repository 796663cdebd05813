"""The ``epochal`` command line: help everywhere, one-line errors, real runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from epochal.cli import COMMANDS, main


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
def test_every_command_has_help(name):
    result = _run(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_unknown_command_is_one_line(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'frobnicate'" in err


def test_user_error_is_one_line_without_traceback():
    result = _run("bench", "--records", "10", "--batch-size", "256")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("epochal bench: error: need records >= batch_size")


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
