"""The workers' warm-up: a throw-away SR and SC that takes the first film's set-up cost."""

from __future__ import annotations

import dataclasses
import logging
import threading

import pytest
from pydicom.dataset import Dataset

from koa_core.delivery.encoding import _raw_sequence
from koa_core.pipeline import results_warm_up
from koa_core.pipeline.results_warm_up import start_results_warm_up, warm_up_results
from tests.core.delivery.films import ALGORITHM


def test_the_warm_up_builds_and_encodes_an_sr_and_an_sc(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []
    real_write = results_warm_up.part10_bytes

    def recording_write(dataset: Dataset) -> bytes:
        written = real_write(dataset)
        encoded.append(str(dataset.Modality))
        return written

    monkeypatch.setattr(results_warm_up, "part10_bytes", recording_write)
    _raw_sequence.cache_clear()
    warm_up_results(ALGORITHM)
    assert encoded == ["SR", "OT"]
    assert _raw_sequence.cache_info().currsize > 10  # the night's SRs find their codes encoded


def test_a_failed_warm_up_is_a_warning_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    # (0018,1020) SoftwareVersions is an LO: at most 64 characters.
    broken = dataclasses.replace(ALGORITHM, version="x" * 200)
    with caplog.at_level(logging.WARNING, logger=results_warm_up.__name__):
        start_results_warm_up(broken)
        for thread in threading.enumerate():
            if thread.name == "koa-results-warm-up":
                thread.join(timeout=60)
    assert "results warm-up failed" in caplog.text
    assert "SR for" in caplog.text
