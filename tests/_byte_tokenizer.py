"""A byte-level tokenizer for the token-store tests: nothing downloads a vocabulary."""

from __future__ import annotations

EOS = 256  # one id past the bytes: the document separator


def encode(text: str) -> list[int]:
    """The UTF-8 bytes of ``text`` as token ids 0..255."""
    return list(text.encode("utf-8"))


encode.vocab_size = EOS + 1  # type: ignore[attr-defined]


def wide(text: str) -> list[int]:
    """Token ids past 65,535 (a large vocabulary): the store must use uint32."""
    return [70_000 + b for b in text.encode("utf-8")]
