"""How a night's files are cut into Dask tasks: fixed slices, or slices that ramp up."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def ramped(items: Sequence[T], size: int, first: int) -> Iterator[list[T]]:
    """Slices of ``items`` that start at ``first`` and double up to ``size``.

    Small first chunks let scoring start within seconds of a night's listing (the first
    result arrives after ``first`` images, not ``size``); full chunks then keep the
    per-task overhead low.
    """
    start, step = 0, max(1, min(first, size))
    while start < len(items):
        yield list(items[start : start + step])
        start += step
        step = min(2 * step, size)
