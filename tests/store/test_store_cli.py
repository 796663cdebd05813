"""``epochal build / inspect / verify`` on good and bad input: one clear line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from epochal.cli import main


def _jsonl(path, n=20):
    path.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(n)))
    return path


def _epochal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "epochal", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )


def test_build_inspect_verify_good_store(tmp_path, capsys):
    src, dest = _jsonl(tmp_path / "d.jsonl"), str(tmp_path / "s")
    assert main(["build", str(src), dest, "--shard-size-mb", "0.0002"]) == 0
    out = capsys.readouterr().out
    assert f"built {dest}: 20 records" in out and "records/s" in out
    assert main(["inspect", dest, "--records", "2"]) == 0
    out = capsys.readouterr().out
    assert (
        "records      20" in out and "text  str" in out and "record 1" in out and "'row 1'" in out
    )
    assert "record 2" not in out
    assert main(["verify", dest]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {dest}: ")


def test_errors_are_one_line_with_a_non_zero_exit(tmp_path, capsys):
    src, dest = _jsonl(tmp_path / "d.jsonl"), str(tmp_path / "s")
    assert main(["build", str(src), dest]) == 0
    capsys.readouterr()
    cases = [
        (["build", str(src), dest], "already holds a finished store"),
        (["build", str(tmp_path / "nope.jsonl"), str(tmp_path / "x")], "does not exist"),
        (["inspect", str(tmp_path / "nowhere")], "no store at"),
        (["verify", str(tmp_path / "nowhere")], "no store at"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert (
            err.startswith(f"epochal {argv[0]}: error: ")
            and message in err
            and "Traceback" not in err
        ), err


def test_bad_input_and_corrupt_store_from_a_real_process(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n')
    run = _epochal("build", str(bad), str(tmp_path / "b"))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert (
        run.stderr.strip().splitlines()[-1]
        == f"epochal build: error: {bad}:2: not valid JSON (Expecting value)"
    )
    dest = tmp_path / "s"
    assert (
        _epochal(
            "build", str(_jsonl(tmp_path / "d.jsonl", 50)), str(dest), "--shard-size-mb", "0.0005"
        ).returncode
        == 0
    )
    shard = sorted((dest / "shards").iterdir())[1]
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    run = _epochal("verify", str(dest))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("epochal verify: error: store ")
        and f"shards/{shard.name} is corrupt" in last
    )


@pytest.mark.parametrize("command", ["build", "inspect", "verify"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and f"epochal {command}" in capsys.readouterr().out
