"""The public API: sorted __all__, every name imports, import stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import epochal


def test_all_is_sorted_and_every_name_imports():
    assert epochal.__all__ == sorted(epochal.__all__)
    for name in epochal.__all__:
        assert getattr(epochal, name) is not None, name


_HEAVY = ("torch", "pyarrow", "fsspec", "xxhash")


def _heavy_modules_after(code: str) -> list[str]:
    """Which heavy libraries a fresh interpreter has imported after running ``code``."""
    probe = (
        f"import json, sys; {code}; print(json.dumps(sorted(set({_HEAVY!r}) & set(sys.modules))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_import_epochal_stays_light():
    assert _heavy_modules_after("import epochal") == []
    # the store's libraries come with the first use of the store, and not torch
    assert _heavy_modules_after("import epochal; epochal.open") == ["fsspec", "pyarrow", "xxhash"]


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
