"""Fuzz the dashboard's JSON API from its own OpenAPI schema (schemathesis): whatever an operator's
session sends, the server answers with a 2xx/4xx, never a server error."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from config.service import load_settings
from dashboards.app import create_app
from pipeline.redis_server import start_embedded
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.dashboards.conftest import PASSWORD, add_users, seed_defects, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    settings_ = load_settings(data_dir=root)
    upgrade(settings_.effective_database_url)
    with Store.open(settings_.effective_database_url) as store:
        add_users(store)
        seed_defects(store, root)
    with (
        start_embedded(root / "r") as redis_server,
        serve(create_app(settings_, redis_server.url, ["line-1"])) as url,
    ):
        yield url


@pytest.fixture(scope="module")
def operator(server: str) -> dict[str, str]:
    """Headers of a logged-in operator: session cookie and CSRF token."""
    resp = httpx.post(f"{server}/api/login", json={"username": "otto", "password": PASSWORD})
    resp.raise_for_status()
    return {"Cookie": f"lw_session={resp.cookies['lw_session']}", "X-CSRF-Token": resp.json()["csrf"]}


def test_no_request_makes_the_server_fail(server: str, operator: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/api/logout":
            continue  # would end the session the other cases use

        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            response = case.call(base_url=server, headers=operator, timeout=20)
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"

        call()
        tried.append(f"{operation.method.upper()} {operation.path}")
    # the schema really lists the API (a fuzz run over nothing would pass too)
    assert {"GET /api/defects", "POST /api/defects/{defect_id}/review", "POST /api/login"} <= set(tried)
