"""README's set-up commands and CI stay in step."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import epochal

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    commands = [
        line for block in blocks[:2] for line in block.splitlines() if not line.startswith("#")
    ]
    assert any(c.endswith("epochal demo") for c in commands), commands
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


# -- the README's documented commands, run as written --------------------------------------

_README = (ROOT / "README.md").read_text()
# commands the README shows that this test does not run, and where they are tested instead
_NOT_RUN = {
    "epochal demo": "the full-size demo takes minutes: tests/train/test_demo.py runs it small",
    "epochal verify s3://bucket/images": "needs a bucket: tests/store runs verify on moto's S3",
    "epochal verify s3://bucket/images --cache": (
        "needs a bucket: tests/store/test_store_s3.py checks a remote store's cache on moto's S3"
    ),
    "epochal build data.jsonl data/text --workers 8": (
        "tests/store/test_store_build_workers.py builds JSONL with --workers 1 and 2 and "
        "compares the fingerprints"
    ),
}


def _documented_commands() -> list[str]:
    """Every ``epochal ...`` / ``torchrun ...`` line of the README's bash blocks, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", _README, re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command.startswith(("epochal ", "torchrun ")) or command == "epochal":
                commands.append(command)
    return commands


def _run_yaml() -> str:
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", _README, re.S) if "run_dir:" in b]
    return block


def test_every_documented_command_is_run_here_or_named_as_tested_elsewhere() -> None:
    commands = _documented_commands()
    assert set(_NOT_RUN) <= set(commands)
    assert set(commands) - set(_NOT_RUN) == set(_RUNS), "a README command nobody runs"


def _epochal(command: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    args = shlex.split(command)
    if args[0] == "torchrun":  # the console script of the environment the tests run in
        args = [sys.executable, "-m", "torch.distributed.run", *args[1:]]
    else:
        args = [sys.executable, "-m", "epochal", *args[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _in_run_dir(tmp: Path) -> Path:
    (tmp / "run.yaml").write_text(_run_yaml())
    return tmp


def _image_folder(tmp: Path) -> Path:
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp / "images" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp / "images" / label / f"{i}.png")
    return tmp


def _check_lint_json(result: subprocess.CompletedProcess[str], tmp: Path) -> None:
    assert result.returncode in (0, 1), result.stderr  # tests/lint/corpus holds real bugs
    report = json.loads(result.stdout)
    assert report["files_checked"] > 50 and report["skipped"] == []
    assert {f["rule"] for f in report["findings"]} <= {"EPL001"}


def _check_lint_text(result: subprocess.CompletedProcess[str], tmp: Path) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No problems found in" in result.stdout


def _check_train(result: subprocess.CompletedProcess[str], tmp: Path) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained to step 32:" in result.stdout and "val_accuracy" in result.stdout
    assert (tmp / "runs" / "shapes" / "config.json").exists()


def _check_torchrun(result: subprocess.CompletedProcess[str], tmp: Path) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    # rank 0 alone logs the end, with the metrics of all ranks; two ranks: 16 steps
    assert result.stderr.count("finished at step 16:") == 1, result.stderr
    assert result.stdout.count("trained to step 16:") == 1, result.stdout


def _check_verify_resume(result: subprocess.CompletedProcess[str], tmp: Path) -> None:
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "bitwise identical after 3 SIGKILLs" in result.stdout
    assert "verify-resume: [5/5] done in" in result.stdout  # a line per phase


def _check_build(result: subprocess.CompletedProcess[str], tmp: Path) -> None:
    assert result.returncode == 0, result.stderr
    assert "built data/images: 6 records" in result.stdout


def _check_resize(result: subprocess.CompletedProcess[str], tmp: Path) -> None:
    from PIL import Image

    assert result.returncode == 0, result.stderr
    assert "built data/small: 6 records" in result.stdout
    store = epochal.open(tmp / "data" / "small")
    assert {Image.open(io.BytesIO(store[i]["image"])).size for i in range(6)} == {(256, 256)}


def _check_inspect(result: subprocess.CompletedProcess[str], tmp: Path) -> None:
    assert result.returncode == 0, result.stderr
    assert "6" in result.stdout


# command as the README writes it -> (working directory maker, checks, commands it needs first)
_RUNS = {
    "epochal lint src/ examples/custom_loop.py": (lambda tmp: ROOT, _check_lint_text, ()),
    "epochal lint --format json --select EPL001 .": (lambda tmp: ROOT, _check_lint_json, ()),
    "epochal train run.yaml --optim.lr 0.01": (_in_run_dir, _check_train, ()),
    "torchrun --standalone --nproc_per_node 2 -m epochal train run.yaml": (
        _in_run_dir,
        _check_torchrun,
        (),
    ),
    "epochal verify-resume run.yaml --kills 3": (_in_run_dir, _check_verify_resume, ()),
    "epochal build images/ data/images": (_image_folder, _check_build, ()),
    "epochal build images/ data/small --resize 256": (_image_folder, _check_resize, ()),
    "epochal inspect data/images": (
        _image_folder,
        _check_inspect,
        ("epochal build images/ data/images",),
    ),
}


@pytest.mark.parametrize("command", sorted(_RUNS))
def test_documented_command_runs_as_written(tmp_path: Path, command: str) -> None:
    make_cwd, check, before = _RUNS[command]
    cwd = make_cwd(tmp_path)
    for earlier in before:
        assert _epochal(earlier, cwd).returncode == 0
    check(_epochal(command, cwd), tmp_path)
