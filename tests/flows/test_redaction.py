"""The flows' log redaction, on a real Prefect API: messages, tracebacks, failed states."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import pytest
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler

from flows.redaction import redacted_logs
from koa_core.privacy import Redactor, pseudonymise

pytestmark = pytest.mark.usefixtures("prefect_api")
SECRET = "redaction-test-secret"
PATIENT_ID, PATIENT_NAME = "PID-5150-ABC", "Doe^Jane^Q"


class _Collect(logging.Handler):
    """A handler of our own, added before the block: it must see redacted records too."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@contextmanager
def _collected(name: str) -> Iterator[_Collect]:
    handler, logger = _Collect(), logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@flow(name="leaky-night")
def _leaky_night() -> None:
    redactor = Redactor(SECRET)
    with redacted_logs(redactor):
        redactor.learn([PATIENT_ID], [PATIENT_NAME])  # learnt mid-block, as the flow does
        logger = get_run_logger()
        logger.info("read %s", f"/in/{PATIENT_ID}_{PATIENT_NAME}.dcm")
        logging.getLogger("koa.test.library").warning("header names %s", PATIENT_NAME)
        try:
            raise ValueError(f"bad header value {PATIENT_ID!r}")
        except ValueError:
            logger.exception("one file failed")
        raise OSError(2, "No such file or directory", f"/in/{PATIENT_ID}.dcm")


def _api_logs(flow_run_id: UUID) -> list[str]:
    APILogHandler().flush()  # send what the run logged before reading it back
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs]


def _leaks(texts: list[str]) -> list[str]:
    secrets = (PATIENT_ID, PATIENT_NAME, "Doe", "Jane")
    return [text for text in texts for secret in secrets if secret in text]


def test_every_record_and_the_failure_of_a_flow_are_redacted() -> None:
    with _collected("prefect.flow_runs") as ours, _collected("koa.test") as library:
        state = _leaky_night(return_state=True)
    assert state.is_failed()
    logs = _api_logs(state.state_details.flow_run_id)
    pseudonym = str(pseudonymise(PATIENT_ID, SECRET))
    # Redacted, not dropped: the message, the traceback and Prefect's own failure report.
    assert any(pseudonym in text and "read /in/" in text for text in logs)
    assert any("one file failed" in text and "ValueError" in text for text in logs)
    assert any("Finished in state Failed" in text and pseudonym in text for text in logs)
    assert _leaks(logs) == []
    assert ours.texts and library.texts and _leaks(ours.texts + library.texts) == []
    assert PATIENT_ID not in str(state.message)


def test_records_outside_the_block_are_left_alone() -> None:
    redactor = Redactor(SECRET, [PATIENT_ID])
    with _collected("koa.test") as handler:
        with redacted_logs(redactor):
            logging.getLogger("koa.test").warning("in %s", PATIENT_ID)
        logging.getLogger("koa.test").warning("out %s", PATIENT_ID)
    assert handler.texts == [f"in {pseudonymise(PATIENT_ID, SECRET)}", f"out {PATIENT_ID}"]
