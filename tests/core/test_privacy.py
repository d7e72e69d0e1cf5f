"""Tests for koa_core.privacy: keyed pseudonyms, opt-in raw ids, redaction of free text."""

from __future__ import annotations

import pickle
import re
import threading

import pytest
from pydantic import SecretStr

from koa_core.config import Settings
from koa_core.privacy import Redactor, patient_key, pseudonymise

SECRET = "site-a-secret"


def anon(value: str) -> str:
    return str(pseudonymise(value, SECRET))


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
    key = patient_key("12345", settings)
    assert (key == "12345") is emit_raw
    if not emit_raw:
        assert key == pseudonymise("12345", SECRET)
    assert patient_key(None, settings) is None


def test_redactor_replaces_whole_ids_with_their_pseudonyms() -> None:
    text = "PatientID 12 in study of 2012 (patient 12345; 12)"
    out = Redactor(SECRET, ["12", "12345", None])(text)
    assert "2012" in out
    assert not re.search(r"(?<!\w)12(345)?(?!\w)", out)
    assert out.count(anon("12")) == 2
    assert out.count(anon("12345")) == 1


@pytest.mark.parametrize(
    "text",
    [
        "/incoming/PID-77_knee.dcm",
        "/incoming/PID-77/study/1.dcm",
        "header: NumberOfFrames 'PID-77'",
        "PID-77",
    ],
)
def test_an_id_in_a_file_name_or_a_quoted_value_is_redacted(text: str) -> None:
    out = Redactor(SECRET, ["PID-77"])(text)
    assert "PID-77" not in out and anon("PID-77") in out


def test_names_are_redacted_whole_and_by_component() -> None:
    redactor = Redactor(SECRET, patient_names=["Doe^Jane^Q"])
    out = redactor("Doe^Jane^Q.dcm; family Doe, given Jane; Q-score unchanged")
    assert out.startswith(anon("Doe^Jane^Q") + ".dcm")
    assert f"family {anon('Doe')}, given {anon('Jane')}" in out
    assert "Q-score" in out  # a one-letter component is not redacted on its own


def test_learnt_values_apply_at_once_and_survive_pickling() -> None:
    redactor = Redactor(SECRET)
    assert redactor("patient P1") == "patient P1"
    redactor.learn(["P1"], ["Roe^Richard"])
    copy = pickle.loads(pickle.dumps(redactor))
    for redact in (redactor, copy):
        assert redact("P1 Roe") == f"{anon('P1')} {anon('Roe')}"


def test_learning_while_other_threads_redact_is_safe() -> None:
    redactor = Redactor(SECRET, ["ID0"])
    errors: list[BaseException] = []

    def redact_many() -> None:
        try:
            for _ in range(200):
                assert "ID0" not in redactor("ID0 and ID1")
        except AssertionError as error:
            errors.append(error)

    threads = [threading.Thread(target=redact_many) for _ in range(3)]
    for thread in threads:
        thread.start()
    for index in range(1, 200):
        redactor.learn([f"ID{index}"])
    for thread in threads:
        thread.join()
    assert errors == []
    assert "ID199" not in redactor("ID199")


def test_nothing_learnt_is_identity() -> None:
    assert Redactor(SECRET, [None, ""], [None, " "])("nothing to hide") == "nothing to hide"
