"""How a night's files are cut into Dask tasks: fixed slices, or slices that ramp up."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def ramped(items: Sequence[T], size: int, first: int, workers: int = 1) -> Iterator[list[T]]:
    """Slices of ``items`` that start at ``first``, double up to ``size`` and taper at the end.

    Small first chunks let scoring start within seconds of a night's listing (the first
    result arrives after ``first`` images, not ``size``); full chunks then keep the
    per-task overhead low. Near the end no chunk holds more than a ``workers``-th of what
    is left (never under ``first``), so the workers finish together: a night of 100 films
    in chunks of 8, 16, 32 and 44 left one of two workers idle while the other built the
    last 44 films' results alone (guided self-scheduling).
    """
    smallest = max(1, min(first, size))
    start, step = 0, smallest
    while start < len(items):
        left = len(items) - start
        length = min(step, max(smallest, -(-left // max(1, workers))))
        yield list(items[start : start + length])
        start += length
        step = min(2 * step, size)
