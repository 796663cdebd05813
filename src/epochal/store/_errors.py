"""The store's errors: both are ``epochal.Error``, so the CLI prints them as one line."""

from __future__ import annotations

from epochal._errors import Error

__all__ = ["CorruptStoreError", "StoreError", "StoreWarning"]


class StoreError(Error):
    """A store cannot be written or opened as asked (no store there, bad records, ...)."""


class CorruptStoreError(StoreError):
    """A store's bytes do not match its manifest; the message names the shard or manifest."""


class StoreWarning(UserWarning):
    """Something about a store was wrong and has been repaired (e.g. a corrupt cached shard)."""
