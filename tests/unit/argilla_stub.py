"""A stand-in for the one Argilla server call the SDK makes to build objects: who am I.

The Argilla SDK (2.x) asks the server for the current user when a client is created, and
settings, fields and questions need a client. Argilla's server needs Elasticsearch or
OpenSearch, which no package registry here offers, so the tests answer ``GET /api/v1/me``
from a local thread and nothing else: anything that would reach a real server fails loudly.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ME = {
    "id": str(uuid.UUID(int=1)),
    "username": "annotator",
    "role": "owner",
    "first_name": "Ann",
    "last_name": None,
    "inserted_at": "2026-01-01T00:00:00",
    "updated_at": "2026-01-01T00:00:00",
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.rstrip("/") == "/api/v1/me":
            body = json.dumps(ME).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(501, f"the test stand-in answers /api/v1/me only, not {self.path}")

    def log_message(self, *args) -> None:  # quiet
        pass


@contextmanager
def me_only_server() -> Iterator[str]:
    """Serve ``/api/v1/me`` on a free local port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
