"""An in-memory stand-in for the part of Argilla's REST API that the SDK (2.x) uses to create a
dataset and log records, so the SDK path of ``rayrlhf label`` runs in tests.

Argilla's server needs Elasticsearch or OpenSearch, which no package registry here offers. This
answers what ``rg.Argilla(...)``, ``rg.Dataset(...).create()`` and ``dataset.records.log(...)``
call: who am I, the default workspace, the dataset with its fields and questions, publishing
and records in bulk. It validates nothing beyond JSON; it keeps every request body in
``server.store`` so a test can read what the SDK sent. Any other call gets 501.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STAMP = "2026-01-01T00:00:00"
ME = {
    "id": str(uuid.UUID(int=1)),
    "username": "annotator",
    "role": "owner",
    "first_name": "Ann",
    "last_name": None,
    "inserted_at": STAMP,
    "updated_at": STAMP,
}
WORKSPACE = {
    "id": str(uuid.UUID(int=2)),
    "name": "argilla",
    "inserted_at": STAMP,
    "updated_at": STAMP,
}


def _new(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**body, "id": str(uuid.uuid4()), "inserted_at": STAMP, "updated_at": STAMP, **extra}


class Store:
    """What the stand-in server holds: datasets by id, with their fields, questions, records."""

    def __init__(self) -> None:
        self.datasets: dict[str, dict[str, Any]] = {}
        self.parts: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def items(self, dataset_id: str, kind: str) -> list[dict[str, Any]]:
        return self.parts.setdefault((dataset_id, kind), [])


ROUTES = [
    ("GET", r"/api/v1/me", "me"),
    ("GET", r"/api/v1/me/workspaces", "workspaces"),
    ("GET", r"/api/v1/workspaces/(?P<ws>[^/]+)", "workspace"),
    ("GET", r"/api/v1/me/datasets", "list_datasets"),
    ("POST", r"/api/v1/datasets", "create_dataset"),
    ("GET", r"/api/v1/datasets/(?P<ds>[^/]+)", "get_dataset"),
    ("PATCH", r"/api/v1/datasets/(?P<ds>[^/]+)", "update_dataset"),
    ("DELETE", r"/api/v1/datasets/(?P<ds>[^/]+)", "delete_dataset"),
    ("PUT", r"/api/v1/datasets/(?P<ds>[^/]+)/publish", "publish"),
    ("POST", r"/api/v1/datasets/(?P<ds>[^/]+)/(?P<kind>fields|questions)", "add_part"),
    ("GET", r"/api/v1/datasets/(?P<ds>[^/]+)/(?P<kind>fields|questions|vectors-settings)", "parts"),
    ("GET", r"/api/v1/me/datasets/(?P<ds>[^/]+)/(?P<kind>metadata-properties)", "parts"),
    ("POST", r"/api/v1/datasets/(?P<ds>[^/]+)/records/bulk", "records"),
    ("PUT", r"/api/v1/datasets/(?P<ds>[^/]+)/records/bulk", "records"),
]


class _Handler(BaseHTTPRequestHandler):
    store: Store

    def _answer(self, method: str) -> None:
        path = self.path.split("?")[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        for verb, pattern, name in ROUTES:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                status, out = getattr(self, name)(body, **match.groupdict())
                break
        else:
            status, out = 501, {"detail": f"the stand-in does not answer {method} {path}"}
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._answer("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._answer("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # ---- the routes ---------------------------------------------------------------------------

    def me(self, body: dict) -> tuple[int, Any]:
        return 200, ME

    def workspaces(self, body: dict) -> tuple[int, Any]:
        return 200, {"items": [WORKSPACE]}

    def workspace(self, body: dict, ws: str) -> tuple[int, Any]:
        return 200, WORKSPACE

    def list_datasets(self, body: dict) -> tuple[int, Any]:
        return 200, {"items": list(self.store.datasets.values())}

    def create_dataset(self, body: dict) -> tuple[int, Any]:
        dataset = _new(body, status="draft", last_activity_at=STAMP)
        dataset.setdefault("workspace_id", WORKSPACE["id"])
        self.store.datasets[dataset["id"]] = dataset
        return 201, dataset

    def get_dataset(self, body: dict, ds: str) -> tuple[int, Any]:
        found = self.store.datasets.get(ds)
        return (200, found) if found else (404, {"detail": f"no dataset {ds}"})

    def update_dataset(self, body: dict, ds: str) -> tuple[int, Any]:
        self.store.datasets[ds].update({k: v for k, v in body.items() if k != "id"})
        return 200, self.store.datasets[ds]

    def delete_dataset(self, body: dict, ds: str) -> tuple[int, Any]:
        return 200, self.store.datasets.pop(ds, {})

    def publish(self, body: dict, ds: str) -> tuple[int, Any]:
        self.store.datasets[ds]["status"] = "ready"
        return 200, self.store.datasets[ds]

    def add_part(self, body: dict, ds: str, kind: str) -> tuple[int, Any]:
        part = _new(body, dataset_id=ds)
        self.store.items(ds, kind).append(part)
        return 201, part

    def parts(self, body: dict, ds: str, kind: str) -> tuple[int, Any]:
        return 200, {"items": self.store.items(ds, kind)}

    def records(self, body: dict, ds: str) -> tuple[int, Any]:
        saved = [
            _new(item, dataset_id=ds, status="pending", external_id=item.get("external_id"))
            for item in body["items"]
        ]
        self.store.items(ds, "records").extend(saved)
        return 200, {"items": saved, "updated": 0}


@contextmanager
def argilla_server() -> Iterator[tuple[str, Store]]:
    """Serve the stand-in on a free local port; yields its base URL and its store."""
    store = Store()
    handler = type("Handler", (_Handler,), {"store": store})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()
