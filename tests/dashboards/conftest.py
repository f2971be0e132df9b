"""Dashboard fixtures: an app on a real store with users of every role, and logged-in clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from config.service import load_settings
from dashboards.app import create_app
from dashboards.auth import COOKIE
from pipeline.evidence import encode_heatmap, write_evidence
from pipeline.redis_server import start_embedded
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from pipeline.store.users import add_user
from tests.pipeline.conftest import postgres_schema_url, postgres_url
from tests.pipeline.store.factories import make_result

__all__ = ["postgres_schema_url", "postgres_url"]

PASSWORD = "correct horse battery"
USERS = {"vera": "viewer", "otto": "operator", "ada": "admin"}


def add_users(store: Store) -> None:
    for name, role in USERS.items():
        add_user(store, name, PASSWORD, role)


def seed_defects(store: Store, data_dir: Path, count: int = 3) -> None:
    """``count`` flagged defects (seq 2, 4, …) with evidence files, between normal inspections."""
    frame = np.full((120, 160, 3), 140, np.uint8)
    _, jpeg = cv2.imencode(".jpg", frame)
    heat = np.zeros((48, 64), np.uint8)
    heat[10:20, 10:20] = 255
    store.upsert_station("line-1", "Line one", "bottle", "{}")
    results, evidence = [], {}
    for i in range(1, 2 * count + 1):
        flagged = i % 2 == 0
        res = make_result("line-1", i, flagged=flagged, heatmap_png=encode_heatmap(heat))
        if flagged:
            evidence[res.id] = write_evidence(data_dir, res, jpeg.tobytes())
        results.append(res)
    store.record(results, evidence)


class As:
    """Requests through the one test client (one event loop) as one visitor: an explicit session
    cookie instead of the client's shared cookie jar."""

    def __init__(self, client: TestClient, cookie: str | None = None) -> None:
        self.client, self.cookie = client, cookie

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if self.cookie:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        self.client.cookies.clear()
        resp = self.client.request(method, url, headers=headers, **kw)
        if COOKIE in resp.cookies:  # a login: this visitor now holds that session
            self.cookie = resp.cookies[COOKIE]
        elif resp.headers.get("set-cookie", "").startswith(f'{COOKIE}=""'):  # logout
            self.cookie = None
        self.client.cookies.clear()
        return resp

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self._send("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self._send("POST", url, **kw)


@dataclass
class Dash:
    client: TestClient
    store: Store
    data_dir: Path
    redis_url: str
    settings: Any = None  # what the app was created with: a test can start a second dashboard

    def anon(self) -> As:
        return As(self.client)

    def login(self, name: str) -> tuple[As, str]:
        """A visitor logged in as ``name`` and its CSRF token."""
        visitor = As(self.client)
        resp = visitor.post("/api/login", json={"username": name, "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        return visitor, resp.json()["csrf"]


@pytest.fixture(params=["sqlite", "postgres"])
def dash(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dash]:
    """The dashboard app on SQLite and on the PostgreSQL of this machine, with users and defects."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_schema_url")
    settings = load_settings(data_dir=tmp_path, **({"database_url": url} if url else {}))
    upgrade(settings.effective_database_url)
    store = Store.open(settings.effective_database_url)
    add_users(store)
    seed_defects(store, tmp_path)
    with start_embedded(tmp_path / "r") as redis_server:
        app = create_app(settings, redis_server.url, ["line-1"])
        with TestClient(app) as client:
            yield Dash(client, store, tmp_path, redis_server.url, settings)
    store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread on a free local port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("the test dashboard did not start within 10 s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def browser_login(page: object, base_url: str, name: str) -> None:
    """Log in through the login page as a person would."""
    page.goto(base_url + "/login")  # type: ignore[attr-defined]
    page.fill("input[name=username]", name)  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(lambda url: "/login" not in url)  # type: ignore[attr-defined]


def http_login(base_url: str, name: str) -> tuple[httpx.Cookies, str]:
    """Session cookies and CSRF token of ``name`` on a running dashboard."""
    resp = httpx.post(f"{base_url}/api/login", json={"username": name, "password": PASSWORD}, timeout=20)
    resp.raise_for_status()
    return resp.cookies, resp.json()["csrf"]
