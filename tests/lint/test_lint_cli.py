"""``epochal lint`` as a command and as an engine: exit codes, JSON, noqa, file discovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from epochal.cli import COMMANDS
from epochal.lint import SKIP_DIRS, discover, lint_paths, lint_source
from epochal.lint.cli import main

BUGGY = """\
for x, y in loader:
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
"""
CLEAN = "print('hello')\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(BUGGY)
    (tmp_path / "clean.py").write_text(CLEAN)
    return tmp_path


def test_exit_status_one_when_found_zero_when_clean(project: Path, capsys) -> None:
    assert main([str(project)]) == 1
    out = capsys.readouterr().out
    assert f"{project / 'train.py'}:4:5: EPL005 [P11]" in out
    assert "zero_grad(set_to_none=True)" in out  # the explanation paragraph
    assert out.rstrip().endswith("Found 1 problem in 2 files: EPL005 x1.")
    assert main([str(project / "clean.py")]) == 0
    assert "No problems found in 1 file." in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [[], ["does/not/exist.py"], ["--select", "EPL999", "."], ["--jobs", "-1", "."]],
    ids=["no-path", "missing-path", "unknown-rule", "negative-jobs"],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("epochal lint: error: ") and "\n" not in err


def test_tyro_argument_errors_exit_2_with_one_line(project: Path, capsys) -> None:
    from epochal.cli import main as epochal_main

    for argv in (["--format", "xml", str(project)], ["--bogus", str(project)]):
        assert epochal_main(["lint", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("epochal lint: error: ") and err.count("\n") == 1, err


def test_select_and_ignore_take_one_value_so_paths_after_them_are_paths(
    project: Path, capsys
) -> None:
    """The README's line `epochal lint --format json --select EPL001 .` lints `.`."""
    assert main(["--format", "json", "--select", "EPL005", str(project)]) == 1
    assert [f["rule"] for f in json.loads(capsys.readouterr().out)["findings"]] == ["EPL005"]
    assert main(["--select", "EPL001,EPL003", str(project)]) == 0
    assert main(["--select", "EPL001", "--select", "EPL005", str(project)]) == 1
    assert main(["--ignore", "EPL005", str(project)]) == 0
    capsys.readouterr()
    assert main(["--select", "EPL999", str(project)]) == 2  # not hidden by a swallowed path
    assert "unknown rule id 'EPL999'" in capsys.readouterr().err


def test_a_file_that_cannot_be_linted_fails_the_run(tmp_path: Path, capsys) -> None:
    """A CI gate must not pass a file it never checked."""
    (tmp_path / "broken.py").write_text("def f(:\n")
    (tmp_path / "clean.py").write_text(CLEAN)
    assert main([str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "No problems found in 1 file, but 1 file could not be linted" in captured.out
    assert f"could not lint {tmp_path / 'broken.py'}" in captured.err


def test_json_schema(project: Path, capsys) -> None:
    (project / "broken.py").write_text("def f(:\n")
    assert main(["--format", "json", str(project)]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert set(doc) == {"version", "files_checked", "suppressed", "skipped", "findings"}
    assert doc["version"] == 1 and doc["files_checked"] == 2 and doc["suppressed"] == 0
    assert doc["skipped"] == [
        {"path": str(project / "broken.py"), "reason": doc["skipped"][0]["reason"]}
    ]
    assert "line 1" in doc["skipped"][0]["reason"]
    (finding,) = doc["findings"]
    assert set(finding) == {
        "rule", "problem", "path", "line", "column", "message", "explanation",
    }  # fmt: skip
    assert (finding["rule"], finding["problem"], finding["line"], finding["column"]) == (
        "EPL005", "P11", 4, 5,
    )  # fmt: skip
    assert finding["path"] == str(project / "train.py")
    assert "could not lint" in captured.err and "broken.py" in captured.err


def test_unparsable_and_undecodable_files_are_skipped_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "syntax.py").write_text("x = (\n")
    (tmp_path / "latin.py").write_bytes(b"# -*- coding: utf-8 -*-\nx = '\xff'\n")
    (tmp_path / "nul.py").write_bytes(b"x = 1\x00\n")
    (tmp_path / "ok.py").write_text(BUGGY)
    report = lint_paths([tmp_path])
    assert sorted(Path(s.path).name for s in report.skipped) == ["latin.py", "nul.py", "syntax.py"]
    assert report.files_checked == 1 and [f.rule for f in report.findings] == ["EPL005"]


def test_noqa_specific_bare_and_other_rule() -> None:
    def lines(src: str) -> list[int]:
        return [f.line for f in lint_source(src)]

    assert lines(BUGGY) == [4]
    assert lines(BUGGY.replace("step()", "step()  # epochal: noqa EPL005")) == []
    assert lines(BUGGY.replace("step()", "step()  # epochal: noqa")) == []
    assert lines(BUGGY.replace("step()", "step()  # Epochal:NOQA epl003, EPL005")) == []
    assert lines(BUGGY.replace("step()", "step()  # epochal: noqa EPL003")) == [4]
    assert lines(BUGGY.replace("step()", "step()  # noqa")) == [4]  # ruff's noqa is not ours
    # the marker inside a string is not a comment
    assert lines(BUGGY.replace("step()", "step('# epochal: noqa')")) == [4]


def test_noqa_on_last_line_of_a_multiline_statement() -> None:
    src = BUGGY.replace(
        "optimizer.step()", "optimizer.step(\n        closure=None,\n    )  # epochal: noqa EPL005"
    )
    report_lines = [f.line for f in lint_source(src)]
    assert report_lines == []


def test_discovery_skips_hidden_and_tool_directories(tmp_path: Path) -> None:
    for skipped in [".git", ".hidden", *SKIP_DIRS]:
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "x.py").write_text(BUGGY)
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "a.py").write_text(CLEAN)
    (tmp_path / "pkg" / "notes.txt").write_text(BUGGY)
    (tmp_path / "script").write_text(BUGGY)  # no suffix: only linted when named
    found = discover([tmp_path, tmp_path / "pkg" / "sub" / "a.py", tmp_path / "script"])
    assert found == [str(tmp_path / "pkg" / "sub" / "a.py"), str(tmp_path / "script")]
    assert discover([tmp_path / ".hidden"]) == [str(tmp_path / ".hidden" / "x.py")]


def test_process_pool_gives_the_same_report(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"m{i:02d}.py").write_text(BUGGY if i % 3 == 0 else CLEAN)
    serial = lint_paths([tmp_path], jobs=1)
    pooled = lint_paths([tmp_path], jobs=2)
    assert serial == pooled and len(serial.findings) == 14


@pytest.mark.slow
def test_registered_and_runs_as_a_real_command(project: Path) -> None:
    assert COMMANDS["lint"][0] == "epochal.lint.cli"
    env = dict(os.environ)
    run = subprocess.run(
        [sys.executable, "-m", "epochal", "lint", "--no-explain", str(project)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert run.stdout.splitlines()[0].startswith(f"{project / 'train.py'}:4:5: EPL005")
    missing = subprocess.run(
        [sys.executable, "-m", "epochal", "lint", str(project / "nope")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nope" in missing.stderr


def test_lint_source_rejects_invalid_python() -> None:
    with pytest.raises(SyntaxError, match="cannot parse"):
        lint_source("def f(:\n", "bad.py")
