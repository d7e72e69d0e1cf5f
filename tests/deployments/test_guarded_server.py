"""A real Prefect server bound to every interface with koa's basic auth: HTTP and websockets.

Prefect 3.9 checks ``Authorization: Basic`` in an HTTP middleware, which websockets bypass;
each websocket endpoint instead demands the ``prefect`` subprotocol and a first message
``{"type": "auth", "token": "user:password"}``. These tests connect without credentials, with
wrong ones and with the right ones, over loopback and over this machine's LAN address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Iterator
from uuid import uuid4

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from deployments.serve import PrefectService
from tests.prefect_server import free_port

AUTH = "koa:guarded-server-test-password"
WRONG = "koa:not-the-password-at-all"
# Every websocket route of the 3.9 server (grep ``router.websocket`` in prefect/server/api).
WEBSOCKETS = [
    "/events/in",
    "/events/out",
    "/logs/out",
    "/task_runs/subscriptions/scheduled",
    "/work_pools/koa/workers/connect",
]
# What an intruder would do: read deployments and every log, delete a deployment, run one.
CALLS = [
    ("POST", "/deployments/filter", 200),
    ("POST", "/logs/filter", 200),
    ("GET", "/admin/version", 200),
    ("DELETE", f"/deployments/{uuid4()}", 404),  # past the guard: no such deployment
    ("POST", f"/deployments/{uuid4()}/create_flow_run", 404),
]
POLICY_VIOLATION = 1008
WS_TIMEOUT_S = 10.0

pytestmark = pytest.mark.slow


def _lan_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectService]:
    """A bare server (no pool, no worker) on 0.0.0.0 with ``AUTH``, as ``koa serve`` runs it."""
    service = PrefectService(
        tmp_path_factory.mktemp("guarded"), host="0.0.0.0", port=free_port(), auth=AUTH
    )
    try:
        service.start_server()
        yield service
    finally:
        service.stop()


def _hosts() -> list[str]:
    return ["127.0.0.1", *filter(None, [_lan_address()])]


def _basic(auth: str) -> dict[str, str]:
    return {"Authorization": f"Basic {base64.b64encode(auth.encode()).decode()}"}


def _api(service: PrefectService, host: str) -> str:
    return f"http://{host}:{service.port}/api"


@pytest.mark.parametrize("host", _hosts())
@pytest.mark.parametrize(("method", "path", "granted"), CALLS)
def test_api_calls_need_the_password(
    guarded: PrefectService, host: str, method: str, path: str, granted: int
) -> None:
    url = _api(guarded, host) + path
    body: dict[str, str] | None = {} if method == "POST" else None

    def status(headers: dict[str, str]) -> int:
        return httpx.request(method, url, headers=headers, json=body, timeout=30).status_code

    assert status({}) == 401
    assert status(_basic(WRONG)) == 401
    assert status(_basic(AUTH)) == granted


def test_health_probes_stay_open(guarded: PrefectService) -> None:
    assert httpx.get(f"{guarded.api_url}/health", timeout=30).status_code == 200


def test_the_ui_is_told_to_ask_for_the_password(guarded: PrefectService) -> None:
    settings = httpx.get(f"{guarded.url}/ui-settings", timeout=30).json()
    assert settings["auth"] == "BASIC"
    assert settings["api_url"] == "/api"


async def _first_reply(url: str, first: dict[str, str] | None, subprotocol: bool) -> object:
    """Connect, send ``first`` (if any) and return the server's first message, or the close
    code when the server closes the socket instead, or the HTTP status that refused it."""
    subprotocols = [websockets.Subprotocol("prefect")] if subprotocol else None
    try:
        async with websockets.connect(
            url, subprotocols=subprotocols, open_timeout=WS_TIMEOUT_S
        ) as socket_:
            if first is not None:
                await socket_.send(json.dumps(first))
            return json.loads(await asyncio.wait_for(socket_.recv(), WS_TIMEOUT_S))
    except InvalidStatus as refused:
        return refused.response.status_code
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def _ws(service: PrefectService, path: str) -> str:
    return f"ws://127.0.0.1:{service.port}/api{path}"


@pytest.mark.parametrize("path", WEBSOCKETS)
def test_a_websocket_without_the_prefect_handshake_is_refused(
    guarded: PrefectService, path: str
) -> None:
    # Prefect closes it before accepting: uvicorn answers the upgrade with 403.
    reply = asyncio.run(_first_reply(_ws(guarded, path), {"filter": "{}"}, subprotocol=False))
    assert reply == 403


@pytest.mark.parametrize("path", WEBSOCKETS)
@pytest.mark.parametrize(
    "first", [{"type": "auth"}, {"type": "auth", "token": WRONG}, {"type": "filter"}]
)
def test_a_websocket_without_the_password_is_closed(
    guarded: PrefectService, path: str, first: dict[str, str]
) -> None:
    reply = asyncio.run(_first_reply(_ws(guarded, path), first, subprotocol=True))
    assert reply == POLICY_VIOLATION


@pytest.mark.parametrize("path", WEBSOCKETS)
def test_a_websocket_with_the_password_is_accepted(guarded: PrefectService, path: str) -> None:
    first = {"type": "auth", "token": AUTH}
    reply = asyncio.run(_first_reply(_ws(guarded, path), first, subprotocol=True))
    assert reply == {"type": "auth_success"}
