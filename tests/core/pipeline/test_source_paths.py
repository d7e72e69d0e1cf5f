"""Tests for koa_core.pipeline.source_paths: names in the batch without patient identifiers."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from koa_core.pipeline.source_paths import (
    SourceIdentity,
    read_path_map,
    source_paths,
    write_path_map,
)
from koa_core.privacy import pseudonymise

SECRET = "source-paths-test-secret"
JANE_ID, JANE_NAME = "12345678", "Doe^Jane"
JANE = str(pseudonymise(JANE_ID, SECRET))


def jane(name: str) -> SourceIdentity:
    return SourceIdentity(name, JANE_ID, JANE_NAME)


def one(identity: SourceIdentity, pattern: str | None = None) -> str:
    (path,) = source_paths([identity], SECRET, pattern)
    return path


@pytest.mark.parametrize(
    "folder",
    [
        "DOE^JANE_12345678",
        "12345678",
        "P12345678X",
        "doe^jane",
        "JANE^DOE",
        "Jane Doe",
        "DOE_JANE",
        "JANEDOE",
        "DOE",
        "jane",
    ],
)
def test_a_folder_naming_the_patient_becomes_her_key(folder: str) -> None:
    assert one(jane(f"{folder}/study/series/1.dcm")) == f"{JANE}/study/series/1.dcm"


def test_a_file_name_is_replaced_and_keeps_its_extension() -> None:
    assert one(jane("x/DOE^JANE_12345678_L.DCM")) == f"x/{JANE}.DCM"
    assert one(jane("x/12345678")) == f"x/{JANE}"


@pytest.mark.parametrize(
    "name",
    [
        "KOA-BAD/bad-000-truncated.dcm",
        "1.2.826.0.1.3680043.8.498.10716781014217634682971588446187917019/1.dcm",
        "studies/1.2.3/series/1.2.4/instances/1.2.5",
        "knee/AP_2012/does.dcm",  # "doe" only inside a longer word
    ],
)
def test_components_that_name_no_one_stay(name: str) -> None:
    assert one(jane(name)) == name


def test_an_id_is_never_found_inside_a_longer_number_or_word() -> None:
    identity = SourceIdentity("2012/12/x-12.dcm", "12", None)
    key = str(pseudonymise("12", SECRET))
    assert one(identity) == f"2012/{key}/{key}.dcm"
    uid = "1.2.826.0.1.3680043.8.498.10716781014217634682971588446187917019"
    assert one(SourceIdentity(f"{uid}/1.dcm", "7167", None)) == f"{uid}/1.dcm"


def test_separators_in_an_id_do_not_matter() -> None:
    key = str(pseudonymise("PID-7734-XYZ", SECRET))
    for folder in ("PID-7734-XYZ", "pid_7734_xyz", "PID7734XYZ", "Doe PID 7734 XYZ"):
        assert one(SourceIdentity(f"{folder}/1.dcm", "PID-7734-XYZ", "Roe")) == f"{key}/1.dcm"


def test_a_folder_sharing_only_some_words_of_an_id_stays() -> None:
    # The phantom's bad files: "KOA-BAD" is part of the id (and name), not the id.
    identity = SourceIdentity("KOA-BAD/bad-003.dcm", "KOA-BAD-0003", "PHANTOM^KOA-BAD-0003")
    assert one(identity) == "KOA-BAD/bad-003.dcm"


def test_a_file_without_a_header_learns_from_the_night() -> None:
    inputs = [
        jane("DOE^JANE_12345678/study/1.dcm"),
        SourceIdentity("DOE^JANE_12345678/study/broken.dcm"),
        SourceIdentity("jane_doe/other.dcm"),
        SourceIdentity("ROE^RICHARD/x.dcm"),
    ]
    assert source_paths(inputs, SECRET) == [
        f"{JANE}/study/1.dcm",
        f"{JANE}/study/broken.dcm",
        f"{JANE}/other.dcm",
        "ROE^RICHARD/x.dcm",  # no header of the night names him
    ]


def test_a_component_naming_two_patients_gets_its_own_keyed_hash() -> None:
    inputs = [
        SourceIdentity("a/1.dcm", "P-0001", "Doe^Jane"),
        SourceIdentity("b/2.dcm", "P-0002", "Roe^Jane"),
        SourceIdentity("JANE/3.png"),
    ]
    assert source_paths(inputs, SECRET)[2] == f"{pseudonymise('JANE', SECRET)}/3.png"


def test_the_configured_pattern_replaces_more_components() -> None:
    pattern = r"^MRN\d+$"
    assert one(jane("MRN0042/1.dcm"), pattern) == f"{JANE}/1.dcm"
    assert one(SourceIdentity("MRN0042/1.png"), pattern) == (
        f"{pseudonymise('MRN0042', SECRET)}/1.png"
    )
    assert one(SourceIdentity("MRN0042/1.png")) == "MRN0042/1.png"


def test_inputs_whose_names_become_one_are_told_apart_stably() -> None:
    inputs = [jane("12345678_a.dcm"), jane("12345678_b.dcm"), jane("other.dcm")]
    first = source_paths(inputs, SECRET)
    assert len(set(first)) == 3 and first[2] == "other.dcm"
    assert all(p.startswith(f"{JANE}~") and p.endswith(".dcm") for p in first[:2])
    assert source_paths(inputs[::-1], SECRET) == first[::-1]  # order does not matter


def test_the_path_map_is_owner_only_and_reads_back(tmp_path: Path) -> None:
    mapping = {f"{JANE}/1.dcm": "/incoming/2026-11-20/DOE^JANE_12345678/1.dcm", "a,b.dcm": "/x"}
    path = tmp_path / "runs" / "2026-11-20" / "run-1" / "paths.csv"
    write_path_map(path, mapping)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_path_map(path) == mapping
