"""Who may reach ``koa serve``: loopback only, unless the server runs with a basic-auth password.

Prefect's server checks ``PREFECT_SERVER_API_AUTH_STRING`` (``user:password``) on every API
request but ``GET /api/health`` and ``/api/ready``, and on every websocket (the first message
must carry the same string); its clients, the worker and the flow runs send
``PREFECT_API_AUTH_STRING``. koa reads the string from the environment only, never from a file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from koa_core.errors import KoaError

SERVER_AUTH_VAR = "PREFECT_SERVER_API_AUTH_STRING"
CLIENT_AUTH_VAR = "PREFECT_API_AUTH_STRING"
KOA_AUTH_VAR = "KOA_SERVER_AUTH"
MIN_PASSWORD_CHARS = 12


class ServerAuthError(KoaError):
    """The server would be reachable beyond this machine without a usable password."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: ``localhost`` or a loopback IP.

    A host name other than ``localhost`` counts as exposed: it may resolve to any interface.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configured_auth(koa_auth: str | None, environ: Mapping[str, str]) -> str | None:
    """The server's ``user:password``: koa's setting or Prefect's own variable, or None.

    Args:
        koa_auth: ``Settings().server_auth`` (``KOA_SERVER_AUTH``), revealed.
        environ: The environment holding ``PREFECT_SERVER_API_AUTH_STRING``, if set.

    Raises:
        ServerAuthError: Both are set and differ: which one the server would use is unclear.
    """
    prefect_auth = environ.get(SERVER_AUTH_VAR) or None
    if koa_auth and prefect_auth and koa_auth != prefect_auth:
        raise ServerAuthError(f"{KOA_AUTH_VAR} and {SERVER_AUTH_VAR} differ: set only one")
    return koa_auth or prefect_auth


def check_auth_string(auth: str) -> None:
    """Refuse an auth string that is malformed or obviously weak; never echo it.

    Raises:
        ServerAuthError: No ``:`` or no user name, characters other than printable ASCII (the
            server's comparison and the UI's login reject them), or a password shorter than
            ``MIN_PASSWORD_CHARS``.
    """
    user, colon, password = auth.partition(":")
    if not colon or not user:
        raise ServerAuthError("the server auth string must read 'user:password'")
    if not (auth.isascii() and auth.isprintable()):
        raise ServerAuthError("the server auth string must be printable ASCII")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ServerAuthError(
            f"the server password has {len(password)} characters: use {MIN_PASSWORD_CHARS} or more"
        )


def guard_exposure(host: str, auth: str | None) -> None:
    """Let the server bind ``host`` only if it stays on loopback or has a sound password.

    Raises:
        ServerAuthError: ``host`` is not loopback and no auth string is set, or the one set is
            malformed or weak.
    """
    if auth is not None:
        check_auth_string(auth)
    elif not is_loopback(host):
        # Short enough for one 80-column line after koa's "error: ".
        raise ServerAuthError(f"--host {host} needs a password: set {KOA_AUTH_VAR}=user:password")


def with_auth(environ: Mapping[str, str], auth: str | None) -> dict[str, str]:
    """``environ`` where the server's and the clients' auth strings are both ``auth``.

    Inherited values are dropped, ``auth`` None included, so the server and its clients agree.
    """
    env = {k: v for k, v in environ.items() if k not in (SERVER_AUTH_VAR, CLIENT_AUTH_VAR)}
    return env | ({SERVER_AUTH_VAR: auth, CLIENT_AUTH_VAR: auth} if auth else {})
