"""Delivery: outbox files, retries only on transient errors, the deliveries table, re-sends."""

from __future__ import annotations

import base64
import socket
from datetime import date
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from koa_core.cli.app import app
from koa_core.config import Settings
from koa_core.delivery.deliver import deliver_findings, instances_dir, redeliver_failed
from koa_core.delivery.destinations import open_destination
from koa_core.delivery.ledger import read_deliveries
from koa_core.delivery.readback import read_report
from koa_core.errors import DeliveryError
from koa_core.storage.results import SCORES, build_scores_table, write_partition
from tests.core.delivery.films import assert_shows_overlay, film
from tests.core.delivery.scripted_server import REFUSED, scripted_stow
from tests.core.storage.test_results import score_rows

NIGHT = date(2026, 11, 27)


@pytest.fixture
def settings(koa_home: Path) -> Settings:
    # One instance at a time, so the scripted answers meet the instances in order.
    return Settings(home=koa_home, deliver_retries=2, deliver_backoff_s=0.5, deliver_concurrency=1)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_outbox_holds_each_result_under_study_and_sop(settings: Settings, tmp_path: Path) -> None:
    scored = film(1)
    outbox = tmp_path / "outbox"
    records = deliver_findings(
        [scored], str(outbox), batch_date=NIGHT, run_id="run-1", settings=settings
    )
    assert [(r.kind, r.status, r.attempts, r.error) for r in records] == [
        ("SR", "delivered", 1, None),
        ("SC", "delivered", 1, None),
    ]
    study = outbox / str(scored.source.StudyInstanceUID)
    assert sorted(p.name for p in study.iterdir()) == sorted(
        f"{r.sop_instance_uid}.dcm" for r in records
    )
    sr = pydicom.dcmread(study / f"{records[0].sop_instance_uid}.dcm")
    assert [(k.side, k.kl_grade, k.grade_set) for k in read_report(sr)] == [
        (k.side, k.kl_grade, k.grade_set) for k in scored.knees
    ]
    sc = pydicom.dcmread(study / f"{records[1].sop_instance_uid}.dcm")
    assert_shows_overlay(sc.pixel_array, scored.overlay)
    assert {r.destination for r in records} == {str(outbox.absolute())}
    assert read_deliveries(settings.results_dir, NIGHT) == records


def test_a_second_delivery_replaces_the_files_and_appends_rows(
    settings: Settings, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    for run in ("run-1", "run-2"):
        deliver_findings([film(2)], str(outbox), batch_date=NIGHT, run_id=run, settings=settings)
    assert len(list(outbox.rglob("*"))) == 3  # one study folder, one SR, one SC
    rows = read_deliveries(settings.results_dir, NIGHT)
    assert [r.run_id for r in rows] == ["run-1", "run-1", "run-2", "run-2"]
    assert len({r.sop_instance_uid for r in rows}) == 2


def test_built_instances_are_kept_in_the_run_folder(settings: Settings, tmp_path: Path) -> None:
    records = deliver_findings(
        [film(3)], str(tmp_path / "out"), batch_date=NIGHT, run_id="run-7", settings=settings
    )
    kept = instances_dir(settings.runs_dir, NIGHT, "run-7")
    assert kept == settings.runs_dir / "2026-11-27" / "run-7" / "deliveries"
    assert sorted(p.stem for p in kept.iterdir()) == sorted(r.sop_instance_uid for r in records)


def test_transient_errors_are_retried_with_backoff(settings: Settings) -> None:
    waits: list[float] = []
    with scripted_stow([503, 429]) as server:
        records = deliver_findings(
            [film(4)],
            server.url,
            batch_date=NIGHT,
            run_id="r",
            settings=settings,
            sleep=waits.append,
        )
    assert [(r.status, r.attempts) for r in records] == [("delivered", 3), ("delivered", 1)]
    assert waits == [0.5, 1.0]
    assert len(server.posts) == 4
    assert {p["path"] for p in server.posts} == {"/dicom-web/studies"}


@pytest.mark.parametrize("answer", [400, 403, 404, 409, 413, REFUSED])
def test_refusals_are_not_retried(settings: Settings, answer: int | str) -> None:
    waits: list[float] = []
    with scripted_stow([answer]) as server:
        records = deliver_findings(
            [film(5)],
            server.url,
            batch_date=NIGHT,
            run_id="r",
            settings=settings,
            sleep=waits.append,
        )
    assert (records[0].status, records[0].attempts, waits) == ("failed", 1, [])
    assert str(answer if answer != REFUSED else "refused") in (records[0].error or "")
    assert (records[1].status, records[1].attempts) == ("delivered", 1)


def test_a_destination_that_stays_down_is_not_waited_on_for_every_instance(
    settings: Settings,
) -> None:
    waits: list[float] = []
    with scripted_stow([500, 502, 504]) as server:
        records = deliver_findings(
            [film(6), film(7)],
            server.url,
            batch_date=NIGHT,
            run_id="r",
            settings=settings,
            sleep=waits.append,
        )
    assert [(r.status, r.attempts) for r in records] == [("failed", 3)] + [("failed", 0)] * 3
    assert len(server.posts) == 3 and waits == [0.5, 1.0]
    assert all("not attempted" in (r.error or "") for r in records[1:])


def test_connection_refused_is_transient(settings: Settings) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    records = deliver_findings(
        [film(8)], url, batch_date=NIGHT, run_id="r", settings=settings, sleep=lambda s: None
    )
    assert [(r.status, r.attempts) for r in records] == [("failed", 3), ("failed", 0)]
    assert "ConnectionError" in (records[0].error or "")


def test_credentials_go_as_basic_auth_and_are_never_recorded(settings: Settings) -> None:
    with scripted_stow([]) as server:
        url = server.url.replace("http://", "http://radiology:s3cret@")
        records = deliver_findings([film(9)], url, batch_date=NIGHT, run_id="r", settings=settings)
    expected = "Basic " + base64.b64encode(b"radiology:s3cret").decode()
    assert {post["Authorization"] for post in server.posts} == {expected}
    assert {r.destination for r in records} == {server.url}
    table = (settings.results_dir / "deliveries" / "2026-11-27" / "part-0.parquet").read_bytes()
    assert b"s3cret" not in table
    assert "s3cret" not in repr(open_destination(url))


def test_a_failed_delivery_leaves_scores_untouched_and_is_redelivered(
    settings: Settings, tmp_path: Path
) -> None:
    scores = write_partition(
        SCORES, NIGHT, build_scores_table(score_rows(NIGHT, 3)), settings.results_dir
    )
    before = (scores / "part-0.parquet").read_bytes()
    outbox = tmp_path / "outbox"
    outbox.write_text("a file where the outbox folder should be")
    first = deliver_findings(
        [film(10)], str(outbox), batch_date=NIGHT, run_id="r1", settings=settings
    )
    assert [(r.status, r.attempts) for r in first] == [("failed", 1), ("failed", 1)]
    assert (scores / "part-0.parquet").read_bytes() == before
    outbox.unlink()
    again = redeliver_failed(NIGHT, str(outbox), settings=settings)
    assert [(r.sop_instance_uid, r.status, r.run_id) for r in again] == sorted(
        (r.sop_instance_uid, "delivered", "r1") for r in first
    )
    assert sorted(p.stem for p in outbox.rglob("*.dcm")) == sorted(
        r.sop_instance_uid for r in first
    )
    assert redeliver_failed(NIGHT, str(outbox), settings=settings) == []
    assert (scores / "part-0.parquet").read_bytes() == before


def test_a_lost_kept_instance_is_recorded_not_skipped(settings: Settings, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    first = deliver_findings(
        [film(11)], str(blocked), batch_date=NIGHT, run_id="r1", settings=settings
    )
    (instances_dir(settings.runs_dir, NIGHT, "r1") / f"{first[0].sop_instance_uid}.dcm").unlink()
    again = redeliver_failed(NIGHT, str(tmp_path / "outbox"), settings=settings)
    outcomes = {r.kind: (r.status, r.attempts) for r in again}
    assert outcomes == {"SR": ("failed", 0), "SC": ("delivered", 1)}


def test_redelivery_needs_a_destination(settings: Settings) -> None:
    with pytest.raises(DeliveryError):
        redeliver_failed(NIGHT, settings=settings)


def test_koa_deliver_resends_and_exits_nonzero_while_some_still_fail(
    koa_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from koa_core.config import get_settings

    outbox = tmp_path / "outbox"
    outbox.write_text("")
    deliver_findings([film(12)], str(outbox), batch_date=NIGHT, run_id="r1", settings=Settings())
    runner = CliRunner()
    still = runner.invoke(app, ["deliver", "--batch-date", "2026-11-27", "--to", str(outbox)])
    assert still.exit_code == 1, still.output
    outbox.unlink()
    monkeypatch.setenv("KOA_DELIVER_TO", str(outbox))
    get_settings.cache_clear()
    done = runner.invoke(app, ["deliver", "--batch-date", "2026-11-27"])
    assert done.exit_code == 0, done.output
    assert "2 delivered" in done.output
    assert len(list(outbox.rglob("*.dcm"))) == 2
    nothing = runner.invoke(app, ["deliver", "--batch-date", "2026-11-27"])
    assert (nothing.exit_code, "nothing to re-send" in nothing.output) == (0, True)


def test_instances_are_sent_several_at_once_and_recorded_in_order(settings: Settings) -> None:
    concurrent = settings.model_copy(update={"deliver_concurrency": 4})
    films = [film(index) for index in range(20, 26)]
    with scripted_stow([]) as server:
        records = deliver_findings(
            films, server.url, batch_date=NIGHT, run_id="r", settings=concurrent
        )
    expected = [(str(f.source.SOPInstanceUID), kind) for f in films for kind in ("SR", "SC")]
    assert [(r.source_sop_instance_uid, r.kind) for r in records] == expected
    assert {(r.status, r.attempts) for r in records} == {("delivered", 1)}
    assert len(server.posts) == 12


def test_a_down_destination_stops_the_sending_with_several_at_once(settings: Settings) -> None:
    concurrent = settings.model_copy(update={"deliver_concurrency": 2})
    waits: list[float] = []
    films = [film(index) for index in range(30, 36)]
    with scripted_stow([503] * 100) as server:
        records = deliver_findings(
            films, server.url, batch_date=NIGHT, run_id="r", settings=concurrent, sleep=waits.append
        )
    assert {r.status for r in records} == {"failed"} and len(records) == 12
    tried = [r for r in records if r.attempts]
    # Only the instances in flight when the first gave up were tried, each to the end.
    assert 1 <= len(tried) <= 2 and {r.attempts for r in tried} == {3}
    assert len(server.posts) == 3 * len(tried)
    assert all("not attempted" in (r.error or "") for r in records if not r.attempts)
