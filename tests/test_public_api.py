"""The public API: sorted __all__, every name imports, import stays light."""

from __future__ import annotations

import subprocess
import sys

import epochal


def test_all_is_sorted_and_every_name_imports():
    assert epochal.__all__ == sorted(epochal.__all__)
    for name in epochal.__all__:
        assert getattr(epochal, name) is not None, name


def test_import_epochal_does_not_import_torch():
    code = "import sys, epochal; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_attribute():
    try:
        epochal.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("expected AttributeError")


def test_errors_share_one_base():
    assert issubclass(epochal.StateError, epochal.Error)
    assert issubclass(epochal.StateError, ValueError)
