"""Tests for koa_core.privacy: the site secret, keyed pseudonyms, opt-in raw ids, redaction."""

from __future__ import annotations

import logging
import pickle
import re
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from koa_core.config import Settings, get_settings
from koa_core.privacy import (
    SITE_SECRET_FILE,
    Redactor,
    SiteSecretError,
    patient_key,
    pseudonymise,
    site_secret,
)

SECRET = "site-a-secret-for-tests"
REPO = Path(__file__).resolve().parents[2]
# The public key koa once shipped as a default: it must be gone from the code for good.
OLD_DEFAULT = "koa-default-site-secret-" + "change-me"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_home_gets_its_own_secret_owner_only_announced_once(
    koa_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="koa_core.privacy"):
        first = site_secret(get_settings())
        again = site_secret(get_settings())
    path = koa_home / "secrets" / SITE_SECRET_FILE
    assert first == again == path.read_text(encoding="utf-8").strip()
    assert re.fullmatch(r"[0-9a-f]{64}", first)  # 32 random bytes
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "patient_key" in warning.getMessage()
    assert first not in caplog.text


def test_two_fresh_homes_key_the_same_id_differently(tmp_path: Path) -> None:
    keys = {patient_key("12345678", Settings(home=tmp_path / name)) for name in ("a", "b")}
    assert len(keys) == 2 and all(str(key).startswith("anon-") for key in keys)


def test_callers_racing_on_a_fresh_home_share_one_secret(tmp_path: Path) -> None:
    settings, barrier = Settings(home=tmp_path / "home"), threading.Barrier(8)
    found: list[str] = []

    def resolve() -> None:
        barrier.wait()
        found.append(site_secret(settings))

    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert [p.name for p in (tmp_path / "home" / "secrets").iterdir()] == [SITE_SECRET_FILE]


def test_the_secret_settings_override_koas_own(
    koa_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOA_SITE_SECRET", SECRET)
    get_settings.cache_clear()
    assert site_secret(get_settings()) == SECRET
    assert patient_key("P1", get_settings()) == pseudonymise("P1", SECRET)
    file = tmp_path / "site-secret.txt"
    file.write_text(SECRET + "-from-a-file\n", encoding="utf-8")
    monkeypatch.delenv("KOA_SITE_SECRET")
    monkeypatch.setenv("KOA_SITE_SECRET_FILE", str(file))
    get_settings.cache_clear()
    assert site_secret(get_settings()) == SECRET + "-from-a-file"
    assert not (koa_home / "secrets").exists()  # koa made none of its own


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (Settings(site_secret=SecretStr("too-short")), "9 bytes, fewer than 16"),
        (Settings(site_secret=SecretStr(SECRET), site_secret_file=Path("/x")), "not both"),
        (Settings(site_secret_file=Path("/nonexistent/secret")), "cannot read"),
    ],
)
def test_a_short_ambiguous_or_missing_secret_is_refused(settings: Settings, match: str) -> None:
    with pytest.raises(SiteSecretError, match=match):
        site_secret(settings)


def test_a_short_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / SITE_SECRET_FILE).write_text("0123456789abcde\n", encoding="utf-8")
    with pytest.raises(SiteSecretError, match="15 bytes"):
        site_secret(Settings(home=tmp_path))


def test_the_code_holds_no_default_secret() -> None:
    sources = [
        path
        for folder in ("koa_core", "flows", "data_checks", "deployments")
        for path in (REPO / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert len(sources) > 20
    found = [
        str(path.relative_to(REPO))
        for path in sources
        if OLD_DEFAULT in (text := path.read_text(encoding="utf-8", errors="replace"))
        or 'SecretStr("' in text
    ]
    assert found == []


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


def test_redaction_ignores_case_as_folder_names_do() -> None:
    redactor = Redactor(SECRET, ["pid-77"], ["Doe^Jane"])
    out = redactor("/incoming/DOE^JANE_PID-77/JANE DOE/doe.dcm")
    folder, given, family = anon("Doe^Jane"), anon("Jane"), anon("Doe")
    assert out == f"/incoming/{folder}_{anon('pid-77')}/{given} {family}/{family}.dcm"


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
