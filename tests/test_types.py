"""mypy over src/ with the configuration in pyproject.toml: the package stays type-clean.

Part of the suite so that the README's one test command covers it. The cache lives in
the temporary directory: a rerun on the same machine takes a few seconds, a fresh CI
machine pays the cold run (about 30 CPU seconds, torch unfollowed; see pyproject.toml).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent


def test_src_is_type_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # mypy reads [tool.mypy] (files = src/epochal) from here
    cache = Path(tempfile.gettempdir()) / "epochal-mypy-cache"
    stdout, stderr, status = api.run(["--cache-dir", str(cache), "--no-error-summary"])
    assert status == 0, stdout + stderr
