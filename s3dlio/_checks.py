"""Argument checks shared by the framework adapters."""

from __future__ import annotations

from typing import Any


def check_level(level: Any) -> None:
    """ValueError unless `level` is a zstd level 1-22 or None."""
    if level is None:
        return
    if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 22:
        raise ValueError(
            f"compression level {level!r} is out of range: valid levels are 1-22 "
            "(or None for no compression)"
        )


def check_positive(name: str, value: Any) -> None:
    """ValueError unless `value` is a positive int or None."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
