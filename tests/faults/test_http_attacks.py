"""Hostile requests against the dashboard, on SQLite and PostgreSQL: oversized bodies, SQL in
filters, session fixation, CSRF and traversal attempts through evidence URLs. Every one refused,
and the store unchanged by it.

(Logins, roles, tokens and the schemathesis fuzz run live in tests/dashboards; this file holds the
attacks that only an attacker would send.)
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from dashboards.limits import MAX_BODY_BYTES
from pipeline.store.models import Defect, Review, User
from tests.dashboards.conftest import PASSWORD, As, Dash


def table_counts(dash: Dash) -> tuple[int, int, int]:
    with dash.store.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (Defect, Review, User)
        )


def test_oversized_bodies_are_refused_before_they_are_read(dash: Dash) -> None:
    client = dash.anon()
    big = "x" * (MAX_BODY_BYTES + 1)
    resp = client.post("/api/login", json={"username": "otto", "password": big})
    assert resp.status_code == 413
    # a streamed body without Content-Length is cut off the same way
    chunks = (b"a" * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 2))
    resp = dash.client.post("/api/login", content=chunks, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    # a lying Content-Length is no way around it either
    resp = dash.client.post("/api/login", content=b"{}", headers={"Content-Length": "99999999999"})
    assert resp.status_code == 413
    viewer, _ = dash.login("vera")  # the server still serves normal requests
    assert viewer.get("/api/defects").status_code == 200


INJECTIONS = [
    "' OR '1'='1",
    "line-1' OR 1=1 --",
    "line-1'; DROP TABLE defects; --",
    '" OR ""="',
    "line-1%' UNION SELECT username, password_hash FROM users --",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_sql_in_filters_is_data_not_code(dash: Dash, payload: str) -> None:
    viewer, _ = dash.login("vera")
    before = table_counts(dash)
    for param in ("station", "defect_type"):
        resp = viewer.get("/api/defects", params={param: payload})
        assert resp.status_code in (200, 422), resp.text
        if resp.status_code == 200:
            assert resp.json()["items"] == []  # matched literally: no station or type is named so
        csv_resp = viewer.get("/api/defects.csv", params={param: payload})
        assert csv_resp.status_code in (200, 422)
        if csv_resp.status_code == 200:
            assert len(csv_resp.text.strip().splitlines()) == 1  # the header only
    assert viewer.get("/api/defects", params={"state": payload}).status_code == 422
    assert viewer.get("/api/defects", params={"min_score": payload}).status_code == 422
    assert table_counts(dash) == before
    assert len(viewer.get("/api/defects").json()["items"]) == before[0]  # nothing dropped


def test_a_planted_session_cookie_is_replaced_at_login(dash: Dash) -> None:
    """Session fixation: a cookie chosen by an attacker before the victim logs in is worth
    nothing afterwards; the session the victim gets is a new one."""
    planted = "attacker-chosen-value"
    victim = As(dash.client, planted)
    assert victim.get("/api/session").status_code == 401
    resp = victim.post("/api/login", json={"username": "otto", "password": PASSWORD})
    assert resp.status_code == 200
    assert victim.cookie and victim.cookie != planted
    assert As(dash.client, planted).get("/api/session").status_code == 401


def test_state_changes_without_the_csrf_token_are_refused(dash: Dash) -> None:
    operator, csrf = dash.login("otto")
    defect_id = operator.get("/api/defects").json()["items"][0]["id"]
    before = table_counts(dash)
    body = {"decision": "confirmed"}
    assert operator.post(f"/api/defects/{defect_id}/review", json=body).status_code == 403
    wrong = {"X-CSRF-Token": csrf[:-2] + "xx"}
    assert operator.post(f"/api/defects/{defect_id}/review", json=body, headers=wrong).status_code == 403
    assert operator.post("/api/logout").status_code == 403
    assert table_counts(dash) == before
    good = {"X-CSRF-Token": csrf}
    assert operator.post(f"/api/defects/{defect_id}/review", json=body, headers=good).status_code == 200


TRAVERSALS = [
    "../linewatch.db",
    "evidence/../../etc/passwd",
    "%2e%2e/%2e%2e/etc/passwd",
    "evidence/%2e%2e/secret_key",
    "..%2fsecret_key",
    "/etc/passwd",
    "evidence/line-1/../../secret_key",
    "evidence\\..\\secret_key",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_evidence_urls_never_leave_the_evidence_folder(dash: Dash, path: str) -> None:
    (dash.data_dir / "secret_key").write_text("not for visitors")  # the dashboard's own file name
    viewer, _ = dash.login("vera")
    resp = viewer.get(f"/evidence/{path}")
    assert resp.status_code == 404
    assert "not for visitors" not in resp.text and "root:" not in resp.text
