"""The ``epochal`` command line: help everywhere, one-line errors, real runs."""

from __future__ import annotations

import re
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


@pytest.mark.slow
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
    result = _run("bench", "nowhere.npy", "--batch-size", "0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("epochal bench: error: need batch_size, batches")


@pytest.mark.slow
def test_bench_measures_the_users_arrays_and_store(tmp_path, capsys):
    import numpy as np

    import epochal

    labels = np.arange(600, dtype=np.int64)
    np.savez(tmp_path / "data.npz", image=np.zeros((600, 48), np.uint8), label=labels)
    epochal.write(({"label": int(i)} for i in labels), tmp_path / "store")
    for data in (tmp_path / "data.npz", tmp_path / "store"):
        argv = ["bench", str(data), "--batch-size", "64", "--batches", "4", "--repeats", "1"]
        assert main(argv) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == (
            f"{data}: 600 records, batch 64, num_workers=0, 4 shuffled batches, median of 1"
        )
        loader, gather, overhead = (re.search(r"\s(-?[\d,]+) ", line) for line in out[1:])
        assert out[1].startswith("  epochal.Loader") and out[2].startswith("  bare gather")
        assert "x the gather" in out[1] and out[3].endswith("us on top of the gather")
        assert float(loader[1].replace(",", "")) > 0 and float(gather[1].replace(",", "")) > 0
        assert overhead is not None
