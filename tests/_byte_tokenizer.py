"""A byte-level tokenizer for the token-store tests: nothing downloads a vocabulary."""

from __future__ import annotations

import os

EOS = 256  # one id past the bytes: the document separator


def encode(text: str) -> list[int]:
    """The UTF-8 bytes of ``text`` as token ids 0..255."""
    return list(text.encode("utf-8"))


encode.vocab_size = EOS + 1  # type: ignore[attr-defined]


def wide(text: str) -> list[int]:
    """Token ids past 65,535 (a large vocabulary): the store must use uint32."""
    return [70_000 + b for b in text.encode("utf-8")]


def fails_on_x(text: str) -> list[int]:
    """Raises on any document containing "x": a tokenizer with a bug."""
    if "x" in text:
        raise ValueError(f"cannot tokenize {text[:10]!r}")
    return encode(text)


def floats(text: str) -> list[float]:
    """Returns floats, not token ids."""
    return [b / 2 for b in text.encode("utf-8")]


def words(text: str) -> list[str]:
    """Returns strings, not token ids."""
    return text.split()


def logged(text: str) -> list[int]:
    """``encode``, noting this process's id in $EPOCHAL_TEST_PIDS (which processes ran it)."""
    with open(os.environ["EPOCHAL_TEST_PIDS"], "a") as f:
        f.write(f"{os.getpid()}\n")
    return encode(text)


logged.vocab_size = EOS + 1  # type: ignore[attr-defined]
