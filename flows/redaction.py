"""Patient data out of the flows' logs: every record the night emits goes through its redactor.

One filter per process sits on every logging handler (Prefect's API and console handlers
among them), so records are redacted whichever logger emits them and whichever handler
sends them on: a filter on a logger would miss what its children propagate. It rewrites
a record only while a ``redacted_logs`` block is active in the process: the flow holds one
for the whole night, and each task on a Dask worker one for its body, with a redactor of
its chunk's patients (small to send, quick to compile).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from koa_core.privacy import Redactor

# Set on a record once redacted: it passes through one filter per handler.
_REDACTED = "koa_redacted"
_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, traceback and stack through every active redactor."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._active: list[Redactor] = []

    def activate(self, redactor: Redactor) -> None:
        """Apply ``redactor`` to every record from now on."""
        with self._lock:
            self._active = [*self._active, redactor]

    def deactivate(self, redactor: Redactor) -> None:
        """Stop applying ``redactor`` (one activation of it)."""
        with self._lock:
            active = list(self._active)
            active.remove(redactor)
            self._active = active

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; never drop it."""
        redactors = self._active
        if not redactors or getattr(record, _REDACTED, False):
            return True
        message = record.getMessage()
        # Handlers format a traceback once and cache it in ``exc_text``: cache it redacted.
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        for redactor in redactors:
            message = redactor(message)
            record.exc_text = redactor(record.exc_text) if record.exc_text else record.exc_text
            record.stack_info = redactor(record.stack_info) if record.stack_info else None
        record.msg, record.args = message, None
        setattr(record, _REDACTED, True)
        return True


_FILTER = RedactingFilter()


@contextmanager
def redacted_logs(redactor: Redactor) -> Iterator[None]:
    """Redact every log record of this process with ``redactor`` while the block runs.

    An exception leaving the block has its message redacted too: Prefect logs it (and the
    failed state's message) after the flow or task body has returned.

    Args:
        redactor: The night's redactor; what it learns inside the block applies at once.
    """
    _install()
    _FILTER.activate(redactor)
    try:
        yield
    except Exception as error:
        _redact_exception(error, redactor)
        raise
    finally:
        _FILTER.deactivate(redactor)


def _install() -> None:
    """Put the filter on every handler now configured (Prefect may have replaced them)."""
    loggers = [logging.getLogger(), *list(logging.Logger.manager.loggerDict.values())]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            handler.addFilter(_FILTER)  # once: a handler keeps one copy of a filter


def _redact_exception(error: BaseException, redactor: Redactor) -> None:
    """Redact the text of ``error`` and of the exceptions it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(redactor(a) if isinstance(a, str) else a for a in current.args)
        if isinstance(current, OSError):
            # str(OSError) is built from these attributes, not from ``args``.
            for name in ("filename", "filename2"):
                if isinstance(value := getattr(current, name), str):
                    setattr(current, name, redactor(value))
        current = current.__cause__ or current.__context__
