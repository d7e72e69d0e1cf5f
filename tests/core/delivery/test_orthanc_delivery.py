"""Against a real Orthanc: STOW-RS, QIDO-RS in each film's study, WADO-RS and the values back."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset

from koa_core.config import Settings
from koa_core.delivery.deliver import deliver_findings, redeliver_failed
from koa_core.delivery.findings import FilmFindings
from koa_core.delivery.ledger import latest_outcomes, read_deliveries
from koa_core.delivery.readback import read_report
from koa_core.phantom.dicom import save_dicom
from koa_core.sources.dicomweb import pull_dicomweb
from tests.core.delivery.films import STUDY_DATE, assert_shows_overlay, film, knee
from tests.orthanc import OrthancServer, run_orthanc

pytestmark = pytest.mark.slow
NIGHT = STUDY_DATE
SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An Orthanc that replaces a re-sent instance, holding two knee films of the night.

    Shared by the module: every test delivers before it looks, and a delivery replaces.
    """
    folder = tmp_path_factory.mktemp("pacs")
    with run_orthanc(folder / "orthanc", overwrite=True) as server:
        _upload(server, [film(1), film(2)], folder)
        yield server


def _upload(server: OrthancServer, films: list[FilmFindings], folder: Path) -> None:
    for scored in films:
        path = folder / f"{scored.source.SOPInstanceUID}.dcm"
        save_dicom(scored.source, path)
        requests.post(
            f"{server.url}/instances", data=path.read_bytes(), timeout=10
        ).raise_for_status()


@pytest.fixture
def settings(koa_home: Path) -> Settings:
    return Settings(home=koa_home, deliver_retries=1, deliver_backoff_s=0.0)


def _client(server: OrthancServer) -> DICOMwebClient:
    return DICOMwebClient(url=server.dicomweb_url)


def _results_in_study(server: OrthancServer, study: str) -> dict[str, list[str]]:
    """QIDO-RS: the study's SOP Instance UIDs by SOP class (film, SR, SC)."""
    found: dict[str, list[str]] = {}
    for match in _client(server).search_for_instances(study_instance_uid=study):
        ds = Dataset.from_json(match)
        found.setdefault(str(ds.SOPClassUID), []).append(str(ds.SOPInstanceUID))
    return found


def _retrieve(server: OrthancServer, study: str, sop: str) -> Dataset:
    client = _client(server)
    (match,) = client.search_for_instances(
        study_instance_uid=study, search_filters={"SOPInstanceUID": sop}
    )
    series = str(Dataset.from_json(match).SeriesInstanceUID)
    return client.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))


def _assert_sr_equals(sr: Dataset, scored: FilmFindings) -> None:
    reported = read_report(sr)
    assert len(reported) == len(scored.knees)
    for got, want in zip(reported, scored.knees, strict=True):
        assert (got.side, got.kl_grade, got.grade_set, got.refer, got.refer_reason) == (
            want.side,
            want.kl_grade,
            want.grade_set,
            want.refer,
            want.refer_reason,
        )
        assert got.probabilities == pytest.approx(want.probabilities)
        assert got.p_koa == pytest.approx(want.p_koa)


def test_results_arrive_in_each_films_study_and_read_back_equal(
    orthanc: OrthancServer, settings: Settings
) -> None:
    night = [film(1), film(2)]
    records = deliver_findings(
        night, orthanc.dicomweb_url, batch_date=NIGHT, run_id="r1", settings=settings
    )
    assert {r.status for r in records} == {"delivered"}
    for scored in night:
        study = str(scored.source.StudyInstanceUID)
        found = _results_in_study(orthanc, study)
        (sr_uid,) = found[SR_CLASS]
        (sc_uid,) = found[SC_CLASS]
        _assert_sr_equals(_retrieve(orthanc, study, sr_uid), scored)
        sc = _retrieve(orthanc, study, sc_uid)
        assert sc.BurnedInAnnotation == "YES"
        assert_shows_overlay(sc.pixel_array, scored.overlay)


def test_a_second_delivery_leaves_one_sr_and_one_sc_per_film_holding_the_new_values(
    orthanc: OrthancServer, settings: Settings
) -> None:
    first = film(1)
    deliver_findings(
        [first], orthanc.dicomweb_url, batch_date=NIGHT, run_id="r1", settings=settings
    )
    rerun = dataclasses.replace(first, knees=(knee("R", 4, refer=False), knee("L", 0)))
    deliver_findings(
        [rerun], orthanc.dicomweb_url, batch_date=NIGHT, run_id="r2", settings=settings
    )
    study = str(first.source.StudyInstanceUID)
    found = _results_in_study(orthanc, study)
    assert (len(found[SR_CLASS]), len(found[SC_CLASS])) == (1, 1)
    _assert_sr_equals(_retrieve(orthanc, study, found[SR_CLASS][0]), rerun)


def test_orthanc_down_during_delivery_is_recorded_and_koa_deliver_sends_later(
    settings: Settings, tmp_path: Path
) -> None:
    first, second = film(1), film(2)
    pacs = tmp_path / "pacs"
    with run_orthanc(pacs, overwrite=True) as server:
        _upload(server, [first, second], tmp_path)
        url = server.dicomweb_url
        deliver_findings([first], url, batch_date=NIGHT, run_id="r1", settings=settings)
    # Stopped (the process has exited): the night's second film finds nobody listening.
    down = deliver_findings([second], url, batch_date=NIGHT, run_id="r1", settings=settings)
    assert [(r.kind, r.status) for r in down] == [("SR", "failed"), ("SC", "failed")]
    # The SC was sent beside the SR (deliver_concurrency) or, once the SR gave up, not at all.
    assert down[0].attempts == 2 and down[1].attempts in (0, 2)
    assert "ConnectionError" in (down[0].error or "")
    port = int(server.url.rsplit(":", 1)[1])
    with run_orthanc(pacs, port=port, overwrite=True) as back:
        again = redeliver_failed(NIGHT, back.dicomweb_url, settings=settings)
        assert [(r.status, r.attempts) for r in again] == [("delivered", 1)] * 2
        latest = latest_outcomes(read_deliveries(settings.results_dir, NIGHT))
        assert {r.status for r in latest} == {"delivered"} and len(latest) == 4
        for scored in (first, second):
            found = _results_in_study(back, str(scored.source.StudyInstanceUID))
            assert (len(found[SR_CLASS]), len(found[SC_CLASS])) == (1, 1)
            _assert_sr_equals(
                _retrieve(back, str(scored.source.StudyInstanceUID), found[SR_CLASS][0]), scored
            )


def test_koas_dicomweb_source_never_lists_its_own_results(
    orthanc: OrthancServer, settings: Settings, tmp_path: Path
) -> None:
    night = [film(1), film(2)]
    deliver_findings(night, orthanc.dicomweb_url, batch_date=NIGHT, run_id="r1", settings=settings)
    listing = pull_dicomweb("dicomweb", orthanc.dicomweb_url, NIGHT, tmp_path / "staged", 0, 0.0)
    assert sorted(f.path.stem for f in listing.files) == sorted(
        str(scored.source.SOPInstanceUID) for scored in night
    )
    assert listing.rejected == ()
