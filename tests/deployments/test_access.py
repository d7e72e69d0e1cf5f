"""The guard in front of ``koa serve``: loopback, or a sound basic-auth password; nothing starts
otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.access import (
    CLIENT_AUTH_VAR,
    KOA_AUTH_VAR,
    SERVER_AUTH_VAR,
    ServerAuthError,
    check_auth_string,
    configured_auth,
    guard_exposure,
    is_loopback,
    with_auth,
)
from deployments.serve import PROJECT_DIR, PrefectService

GOOD = "koa:correct-horse-battery"
EXPOSED = ["0.0.0.0", "::", "192.168.1.20", "fe80::1", "knee-server.example.org"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "localhost"])
def test_loopback_binds_need_no_password(host: str) -> None:
    assert is_loopback(host)
    guard_exposure(host, None)


@pytest.mark.parametrize("host", EXPOSED)
def test_any_other_bind_without_a_password_is_refused(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(
        ServerAuthError, match=f"--host {host} needs a password: set {KOA_AUTH_VAR}"
    ):
        guard_exposure(host, None)


@pytest.mark.parametrize("host", [*EXPOSED, "127.0.0.1"])
def test_a_sound_password_allows_any_bind(host: str) -> None:
    guard_exposure(host, GOOD)


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        ("correct-horse-battery", "must read 'user:password'"),
        (":correct-horse-battery", "must read 'user:password'"),
        ("admin:pass", "password has 4 characters: use 12 or more"),
        ("admin:", "password has 0 characters"),
        ("admin:elevenchars", "password has 11 characters"),
        ("koa:correct horse\tbattery", "printable ASCII"),
        ("koa:correct-hörse-battery", "printable ASCII"),
    ],
)
def test_malformed_or_weak_strings_are_refused_on_every_host(auth: str, reason: str) -> None:
    for host in ("127.0.0.1", "0.0.0.0"):
        with pytest.raises(ServerAuthError, match=reason) as refused:
            guard_exposure(host, auth)
        assert auth not in str(refused.value)  # the string is never echoed


def test_a_twelve_character_password_with_colons_is_accepted() -> None:
    check_auth_string("koa:twelve:chars")


@pytest.mark.parametrize(
    ("koa_auth", "environ", "expected"),
    [
        (None, {}, None),
        (GOOD, {}, GOOD),
        (None, {SERVER_AUTH_VAR: GOOD}, GOOD),
        (GOOD, {SERVER_AUTH_VAR: GOOD}, GOOD),
        ("", {SERVER_AUTH_VAR: ""}, None),
    ],
)
def test_the_auth_string_comes_from_koa_or_from_prefect_s_own_variable(
    koa_auth: str | None, environ: dict[str, str], expected: str | None
) -> None:
    assert configured_auth(koa_auth, environ) == expected


def test_two_different_auth_strings_are_refused() -> None:
    with pytest.raises(ServerAuthError, match=f"{KOA_AUTH_VAR} and {SERVER_AUTH_VAR} differ"):
        configured_auth(GOOD, {SERVER_AUTH_VAR: "other:correct-horse-battery"})


@pytest.mark.parametrize("auth", [GOOD, None])
def test_server_and_clients_get_the_same_string_whatever_was_inherited(auth: str | None) -> None:
    inherited = {"PATH": "/bin", SERVER_AUTH_VAR: "old:server-string", CLIENT_AUTH_VAR: "x:y"}
    env = with_auth(inherited, auth)
    assert env.get(SERVER_AUTH_VAR) == env.get(CLIENT_AUTH_VAR) == auth
    assert env["PATH"] == "/bin"


def test_the_service_environment_carries_the_password_to_every_part(tmp_path: Path) -> None:
    service = PrefectService(tmp_path, host="0.0.0.0", port=4321, auth=GOOD)
    assert service.env[SERVER_AUTH_VAR] == service.env[CLIENT_AUTH_VAR] == GOOD
    # Local clients reach a wildcard bind through loopback; browsers use the page's origin.
    assert service.env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert service.env["PREFECT_UI_API_URL"] == "/api"


def test_the_service_refuses_an_exposed_bind_before_creating_anything(tmp_path: Path) -> None:
    with pytest.raises(ServerAuthError):
        PrefectService(tmp_path / "home", host="0.0.0.0")
    assert not (tmp_path / "home").exists()


def _koa_serve(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``koa serve`` command, with no auth string inherited from this shell."""
    environ = {k: v for k, v in os.environ.items() if k not in (SERVER_AUTH_VAR, KOA_AUTH_VAR)}
    return subprocess.run(
        [sys.executable, "-m", "koa_core", "serve", *args],
        cwd=PROJECT_DIR,
        env={**environ, "KOA_HOME": str(home), "COLUMNS": "80", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, f"error: --host 0.0.0.0 needs a password: set {KOA_AUTH_VAR}=user:password"),
        ({KOA_AUTH_VAR: "admin:admin"}, "error: the server password has 5 characters"),
        ({SERVER_AUTH_VAR: "admin"}, "error: the server auth string must read 'user:password'"),
    ],
)
def test_koa_serve_on_every_interface_exits_2_with_one_line(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    done = _koa_serve(tmp_path / "home", "--host", "0.0.0.0", "--port", "4321", **env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(message)
    assert not (tmp_path / "home" / "prefect").exists()  # refused before anything started
