"""A real HTTP server standing in for a remote STOW-RS host that answers scripted statuses."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A STOW-RS response whose one instance was refused: (0008,1198) with (0008,1197) 0xA700.
REFUSED = "refused"
_REFUSED_BODY = json.dumps(
    {"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [42752]}}]}}
).encode()


@dataclass
class ScriptedServer:
    """Answers POST n with ``script[n]`` (an HTTP status or ``REFUSED``), then 200."""

    script: list[int | str]
    url: str = ""
    posts: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def scripted_stow(script: list[int | str]) -> Iterator[ScriptedServer]:
    """Serve ``script`` on a loopback port; ``url`` is its DICOMweb root."""
    state = ScriptedServer(list(script))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.posts.append({"path": self.path, **dict(self.headers.items())})
            step = state.script.pop(0) if state.script else 200
            body = _REFUSED_BODY if step == REFUSED else b""
            self.send_response(200 if step == REFUSED else int(step))
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
