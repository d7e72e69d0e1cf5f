"""Writing many phantoms at once: the renders spread over the machine's cores, in order.

Every phantom writer is a pure function of its index (and seed), so a big set can be
rendered in worker processes with the same files as one process would write. Workers are
spawned, not forked: the caller may already hold torch's thread pools (the demo trains
the localizer before it writes the grader's films), and a forked copy of those can hang.
A spawned worker costs about a second of imports, so small sets stay in this process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import TypeVar

T = TypeVar("T")
MIN_PER_WORKER = 24
"""Renders per worker below which spawning costs more than it saves."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return max(1, len(os.sched_getaffinity(0)))


def map_in_order(render: Callable[[int], T], n: int, workers: int | None = None) -> Iterator[T]:
    """``render(0) .. render(n - 1)``, in that order, in up to ``workers`` processes.

    ``render`` must be picklable (a module-level function or a ``functools.partial`` of
    one). Results are yielded as they arrive in order, so a caller can report progress.
    """
    workers = min(workers or usable_cores(), n // MIN_PER_WORKER)
    done = 0
    if workers > 1:
        try:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for result in pool.map(render, range(n), chunksize=max(1, n // (8 * workers))):
                    yield result
                    done += 1
        except BrokenProcessPool:
            # A script without an ``if __name__ == "__main__"`` guard cannot be spawned
            # from: its workers die on start. Its renders are done here instead.
            pass
    yield from (render(index) for index in range(done, n))
