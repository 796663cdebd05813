"""epochal's exception hierarchy: every error epochal raises on purpose is an ``epochal.Error``."""

from __future__ import annotations

__all__ = [
    "Error",
    "InvalidTypeError",
    "InvalidValueError",
    "OutOfRangeError",
    "RunInterrupted",
    "SeedError",
    "StateError",
    "UsageError",
]


class Error(Exception):
    """Base class of every error epochal raises for bad input or bad data.

    The command line prints these as one line, without a traceback.
    """


class InvalidValueError(Error, ValueError):
    """An argument's value is not one epochal accepts (a count below 1, an unknown name, ...).

    Also a ``ValueError``, so code that catches the built-in keeps working.
    """


class InvalidTypeError(Error, TypeError):
    """An argument is of a type epochal does not accept. Also a ``TypeError``."""


class OutOfRangeError(Error, IndexError):
    """An index, position or rank lies outside its range.

    Also an ``IndexError``: sequence protocols (``for x in source``, ``list(source)``)
    stop on it as they do on the built-in.
    """


class StateError(Error, ValueError):
    """A saved state does not fit the object it is loaded into (other dataset, version, ...)."""


class SeedError(Error, ValueError):
    """A seed or epoch is not an integer in ``[0, 2**64)``, the one range epochal accepts."""


class UsageError(Error):
    """A command-line argument or configuration value is invalid.

    Raised before any work starts, so nothing is created or changed; the command line
    prints it as one line and exits with status 2. (Not a ValueError on purpose: tyro
    would wrap one raised by a config's validation in its own error box.)
    """


class RunInterrupted(Exception):
    """A run stopped on SIGINT or SIGTERM; the message says where a rerun resumes.

    Not an :class:`Error`: nothing was wrong. The command line prints the message and
    exits with ``exit_code`` (128 + the signal number, as a shell reports a signal).
    """

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
