"""A tokenizer module that fails as it is imported (the CLI must say so in one line)."""

from __future__ import annotations

raise RuntimeError("this module needs a vocabulary file that is not there")
