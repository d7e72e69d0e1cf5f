"""Tests for koa_core.privacy: keyed pseudonyms, opt-in raw ids, redaction of log text."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from koa_core.config import Settings
from koa_core.io.record import ImageMetadata
from koa_core.privacy import patient_key, pseudonymise, redact

SECRET = "site-a-secret"


def meta(patient_id: str | None) -> ImageMetadata:
    return ImageMetadata(
        path="/x.dcm",
        file_format="dicom",
        rows=512,
        columns=512,
        bits_stored=12,
        photometric_interpretation="MONOCHROME2",
        patient_id=patient_id,
    )


@pytest.mark.parametrize("patient_id", ["12345", "DOE^JOHN", "ünïcode-id", "0"])
def test_pseudonym_is_stable_keyed_and_hides_the_id(patient_id: str) -> None:
    key = pseudonymise(patient_id, SECRET)
    assert key is not None
    assert re.fullmatch(r"anon-[0-9a-f]{32}", key)
    assert key == pseudonymise(patient_id, SECRET)
    assert key != pseudonymise(patient_id, "site-b-secret")
    assert key != pseudonymise(patient_id + "x", SECRET)


def test_insignificant_spaces_do_not_change_the_pseudonym() -> None:
    assert pseudonymise(" 12345 ", SECRET) == pseudonymise("12345", SECRET)


@pytest.mark.parametrize("patient_id", [None, "", "   "])
def test_missing_id_has_no_pseudonym(patient_id: str | None) -> None:
    assert pseudonymise(patient_id, SECRET) is None


@pytest.mark.parametrize("emit_raw", [False, True])
def test_raw_ids_only_when_enabled(emit_raw: bool) -> None:
    settings = Settings(site_secret=SecretStr(SECRET), emit_raw_patient_ids=emit_raw)
    key = patient_key(meta("12345"), settings)
    assert (key == "12345") is emit_raw
    if not emit_raw:
        assert key == pseudonymise("12345", SECRET)
    assert patient_key(meta(None), settings) is None


def test_redact_replaces_whole_ids_with_their_pseudonyms() -> None:
    text = "PatientID 12 in study of 2012 (patient 12345; 12)"
    out = redact(text, ["12", "12345", None], SECRET)
    assert "2012" in out
    assert not re.search(r"(?<!\w)12(345)?(?!\w)", out)
    assert out.count(str(pseudonymise("12", SECRET))) == 2
    assert out.count(str(pseudonymise("12345", SECRET))) == 1


def test_redact_without_ids_is_identity() -> None:
    assert redact("nothing to hide", [None, ""], SECRET) == "nothing to hide"
