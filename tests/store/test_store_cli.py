"""``epochal build / inspect / verify`` on good and bad input: one clear line, never a traceback."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import epochal
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
    assert main(["verify", dest, "--cache"]) == 0  # a local store has no cached copies
    assert "cache: 0 cached shard copies checked" in capsys.readouterr().out


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


def _bad_stores(tmp_path):
    """Stores broken in the ways the attack pass found, each as (name, url)."""
    out = {}
    src = _jsonl(tmp_path / "d.jsonl")
    for name in ("dir-shard", "utf8", "no-shards", "nul-name", "huge-count"):
        dest = tmp_path / name
        assert main(["build", str(src), str(dest), "--shard-size-mb", "0.0002"]) == 0
        out[name] = dest
    shard = sorted((out["dir-shard"] / "shards").iterdir())[0]
    shard.unlink()
    shard.mkdir()
    shard = sorted((out["utf8"] / "shards").iterdir())[0]
    data = shard.read_bytes()
    at = data.index(b"row 0")
    shard.write_bytes(data[:at] + b"\xff" + data[at + 1 :])  # inspect reads record 0
    for name, edit in (
        ("no-shards", lambda b: b.update(shards=[])),
        ("nul-name", lambda b: b["shards"][0].update(name="part-00000-a\x00-000000.arrow")),
        ("huge-count", lambda b: b["shards"][0].update(records=10**20)),
    ):
        body = json.loads((out[name] / "manifest.json").read_text())
        edit(body)
        (out[name] / "manifest.json").write_text(json.dumps(body))
    return out


def test_every_bad_input_is_one_line_and_an_exit_code(tmp_path, capsys, monkeypatch):
    """The attack pass's table: each bad input gets one line on stderr saying what is wrong
    (no traceback: an exception escaping ``main`` fails this test), exit code 1 or 2."""
    stores = _bad_stores(tmp_path)
    src = _jsonl(tmp_path / "ok.jsonl")
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not a zip file")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    cases = [
        (["build", str(tmp_path / "empty.npy"), str(tmp_path / "o1")], 1, "empty"),
        (["build", str(tmp_path / "bad.npz"), str(tmp_path / "o2")], 1, "BadZipFile"),
        (["build", str(src), str(tmp_path / "o3"), "--shard-size-mb", "0.0000001"], 2, "at least"),
        (["build", str(src), str(tmp_path / "o4"), "--shard-size-mb", "nan"], 2, "finite"),
        (["build", str(src), str(tmp_path / "o5"), "--shard-size-mb", "inf"], 2, "finite"),
        (["verify", str(stores["dir-shard"])], 1, "cannot be read"),
        (["inspect", str(stores["utf8"])], 1, "not valid UTF-8"),
        (["verify", str(stores["utf8"])], 1, "shards are bad"),
        (["inspect", str(stores["no-shards"])], 1, "shards must be a non-empty list"),
        (["verify", str(stores["no-shards"])], 1, "shards must be a non-empty list"),
        (["inspect", str(stores["nul-name"])], 1, "is not a shard file name"),
        (["inspect", str(stores["huge-count"])], 1, "records must be an integer in"),
        (["verify", str(stores["huge-count"])], 1, "records must be an integer in"),
    ]
    if importlib.util.find_spec("s3fs") is not None:
        cases.append((["build", str(src), "s3://epochal-no-such-bucket/x"], 1, "credentials"))
    for argv, code, message in cases:
        assert main(argv) == code, argv
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, (argv, captured.err)
        assert lines[0].startswith(f"epochal {argv[0]}: error: ") and message in lines[0], (
            argv,
            lines[0],
        )
    with pytest.raises(epochal.Error, match=r"cannot be read|not a regular file"):
        epochal.open(stores["dir-shard"], verify=True)
