"""epochal's exception hierarchy: every error epochal raises on purpose is an ``epochal.Error``."""

from __future__ import annotations

__all__ = ["Error", "StateError"]


class Error(Exception):
    """Base class of every error epochal raises for bad input or bad data.

    The command line prints these as one line, without a traceback.
    """


class StateError(Error, ValueError):
    """A saved state does not fit the object it is loaded into (other dataset, version, ...)."""
