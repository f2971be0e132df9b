"""The dashboard API on real stores: who may do what, validation, pagination, the audit trail."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from sqlalchemy import select

from pipeline import keys
from pipeline.store.models import Defect, Review
from tests.dashboards.conftest import PASSWORD, As, Dash
from tests.pipeline.store.factories import T0

READS = ["/api/stations", "/api/defects", "/api/defects?state=unreviewed", "/api/session", "/parts/summary"]


@pytest.mark.parametrize("path", READS)
def test_reads_need_a_login_and_any_role_may_read(dash: Dash, path: str) -> None:
    assert dash.anon().get(path).status_code == 401
    for name in ("vera", "otto", "ada"):
        client, _ = dash.login(name)
        assert client.get(path).status_code == 200, (name, path)


def test_pages_send_anonymous_visitors_to_the_login(dash: Dash) -> None:
    for page in ("/", "/review"):
        resp = dash.anon().get(page, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"].startswith("/login")
    assert dash.client.get("/login").status_code == 200
    assert dash.client.get("/healthz").status_code == 200


def test_reviewing_needs_an_operator_and_the_csrf_token(dash: Dash) -> None:
    viewer, viewer_csrf = dash.login("vera")
    operator, csrf = dash.login("otto")
    defect_id = operator.get("/api/defects").json()["items"][0]["id"]
    body = {"decision": "confirmed", "defect_type": "hole", "note": "seen on the belt"}
    url = f"/api/defects/{defect_id}/review"

    assert dash.anon().post(url, json=body).status_code == 401
    refused = viewer.post(url, json=body, headers={"X-CSRF-Token": viewer_csrf})
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    assert operator.post(url, json=body).status_code == 403  # no CSRF header
    assert operator.post(url, json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert operator.post(url, json=body, headers={"X-CSRF-Token": viewer_csrf}).status_code == 403

    ok = operator.post(url, json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200
    assert (ok.json()["review_state"], ok.json()["defect_type"], ok.json()["reviewed_by"]) == (
        "confirmed",
        "hole",
        "otto",
    )
    admin, admin_csrf = dash.login("ada")  # admins may review too; a second decision is audited
    changed = admin.post(url, json={"decision": "rejected"}, headers={"X-CSRF-Token": admin_csrf})
    assert changed.json()["review_state"] == "rejected" and changed.json()["defect_type"] == "hole"

    with dash.store.engine.connect() as conn:
        rows = conn.execute(select(Review).where(Review.defect_id == defect_id).order_by(Review.id)).all()
        state = conn.execute(select(Defect.review_state).where(Defect.id == defect_id)).scalar_one()
    assert state == "rejected"
    assert [(r.username, r.decision) for r in rows] == [("otto", "confirmed"), ("ada", "rejected")]
    assert rows[0].previous["review_state"] == "unreviewed"
    assert rows[1].previous == {
        "review_state": "confirmed",
        "defect_type": "hole",
        "note": "seen on the belt",
        "reviewed_by": "otto",
    }
    trail = viewer.get(f"/api/defects/{defect_id}").json()["reviews"]
    assert [t["username"] for t in trail] == ["otto", "ada"]


def test_bulk_review_audits_each_defect(dash: Dash) -> None:
    operator, csrf = dash.login("otto")
    ids = [d["id"] for d in operator.get("/api/defects").json()["items"]]
    resp = operator.post(
        "/api/defects/review",
        json={"ids": [*ids, 999_999], "decision": "rejected", "note": "glare"},
        headers={"X-CSRF-Token": csrf},
    )
    assert resp.json() == {"reviewed": ids, "missing": [999_999]}
    assert operator.get("/api/defects?state=unreviewed").json()["total"] == 0
    with dash.store.engine.connect() as conn:
        assert conn.execute(select(Review.defect_id).order_by(Review.defect_id)).scalars().all() == sorted(
            ids
        )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/defects/{id}/review", {"decision": "maybe"}),
        ("/api/defects/{id}/review", {}),
        ("/api/defects/{id}/review", {"decision": "confirmed", "note": "x" * 2001}),
        ("/api/defects/review", {"ids": [], "decision": "confirmed"}),
        ("/api/defects/review", {"ids": "1", "decision": "confirmed"}),
        ("/api/defects/not-a-number/review", {"decision": "confirmed"}),
    ],
)
def test_malformed_review_requests_are_refused_with_a_reason(dash: Dash, path: str, body: dict) -> None:
    operator, csrf = dash.login("otto")
    defect_id = operator.get("/api/defects").json()["items"][0]["id"]
    resp = operator.post(path.replace("{id}", str(defect_id)), json=body, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 422
    assert resp.json()["detail"]
    assert operator.get(f"/api/defects/{defect_id}").json()["review_state"] == "unreviewed"


def test_unknown_defect_is_404(dash: Dash) -> None:
    operator, csrf = dash.login("otto")
    resp = operator.post(
        "/api/defects/424242/review", json={"decision": "confirmed"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status_code == 404
    assert operator.get("/api/defects/424242").status_code == 404


def test_defects_are_paginated_newest_first_and_filtered(dash: Dash) -> None:
    viewer, _ = dash.login("vera")
    everything = viewer.get("/api/defects").json()
    assert everything["total"] == 3
    seqs = [d["seq"] for d in everything["items"]]
    assert seqs == [6, 4, 2]
    page = viewer.get("/api/defects?limit=2&offset=2").json()
    assert [d["seq"] for d in page["items"]] == [2] and page["total"] == 3
    assert viewer.get("/api/defects?station=elsewhere").json()["total"] == 0
    first = everything["items"][0]
    assert first["verdict"]["status"] and "agrees_with_detector" in first["verdict"]
    for bad in ("limit=0", "limit=500", "offset=-1", "state=maybe", "since=yesterday"):
        assert viewer.get(f"/api/defects?{bad}").status_code == 422, bad


def test_login_errors_throttle_and_sessions(dash: Dash) -> None:
    client = dash.anon()
    assert client.post("/api/login", json={"username": "otto"}).status_code == 422
    assert client.post("/api/login", json={"username": "nobody", "password": PASSWORD}).status_code == 401
    for _ in range(5):
        assert client.post("/api/login", json={"username": "otto", "password": "wrong"}).status_code == 401
    throttled = client.post("/api/login", json={"username": "otto", "password": PASSWORD})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    # another user from the same address is not locked out by otto's failures
    resp = client.post("/api/login", json={"username": "vera", "password": PASSWORD})
    assert resp.status_code == 200
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    first = client.cookie
    assert first
    client.post("/api/login", json={"username": "vera", "password": PASSWORD})
    assert client.cookie != first  # every login issues a fresh session
    forged = As(dash.client, first[:-4] + "AAAA")
    assert forged.get("/api/session").status_code == 401
    csrf = client.get("/api/session").json()["csrf"]
    assert client.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert client.get("/api/session").status_code == 401


def test_evidence_needs_a_login_and_stays_in_its_folder(dash: Dash) -> None:
    viewer, _ = dash.login("vera")
    item = viewer.get("/api/defects").json()["items"][0]
    assert dash.anon().get(f"/evidence/{item['evidence']}").status_code == 401
    assert viewer.get(f"/evidence/{item['evidence']}").status_code == 200
    for path in ("../linewatch.db", "evidence/../secret_key", "%2e%2e/secret_key", "secret_key"):
        assert viewer.get(f"/evidence/{path}").status_code == 404, path


def test_the_api_schema_lists_the_review_endpoints(dash: Dash) -> None:
    paths = dash.client.get("/openapi.json").json()["paths"]
    assert {
        "/api/defects",
        "/api/defects/{defect_id}/review",
        "/api/stations/{station_id}/webrtc/offer",
    } <= set(paths)


def test_history_filters_and_csv_export(dash: Dash) -> None:
    operator, csrf = dash.login("otto")
    newest = operator.get("/api/defects").json()["items"][0]["id"]
    operator.post(
        f"/api/defects/{newest}/review",
        json={"decision": "confirmed", "defect_type": "hole, round", "note": 'said "hi"'},
        headers={"X-CSRF-Token": csrf},
    )
    viewer, _ = dash.login("vera")
    assert viewer.get("/api/defects?defect_type=hole, round").json()["total"] == 1
    assert viewer.get("/api/defects?min_score=0.9").json()["total"] == 0  # factory scores are 0.8
    assert viewer.get("/api/defects?min_score=0.5").json()["total"] == 3
    assert viewer.get("/api/defects?until=2000-01-01T00:00:00Z").json()["total"] == 0
    assert viewer.get("/api/defects?since=2000-01-01T00:00:00Z").json()["total"] == 3
    assert viewer.get("/api/defects?min_score=2").status_code == 422

    assert dash.anon().get("/api/defects.csv").status_code == 401
    resp = viewer.get("/api/defects.csv?state=confirmed")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert len(rows) == 1
    row = rows[0]
    assert (row["station"], row["seq"], row["review_state"], row["reviewed_by"]) == (
        "line-1",
        "6",
        "confirmed",
        "otto",
    )
    assert row["defect_type"] == "hole, round" and row["note"] == 'said "hi"'  # quoted, not split
    everything = list(csv.DictReader(io.StringIO(viewer.get("/api/defects.csv").text)))
    assert [r["seq"] for r in everything] == ["6", "4", "2"]
    assert viewer.get("/history").status_code == 200


def test_hourly_counts_bucket_inspections_per_hour(dash: Dash) -> None:
    # the seeded inspections were captured at T0 + 1 … T0 + 6 seconds: one hour, 6 frames, 3 flagged
    now = datetime.fromtimestamp(T0, UTC) + timedelta(hours=2)
    hours = dash.store.hourly_counts("line-1", 24, now=now)
    assert len(hours) == 24
    assert [(h["inspected"], h["flagged"]) for h in hours[-3:]] == [(6, 3), (0, 0), (0, 0)]
    assert sum(h["inspected"] for h in hours) == 6
    assert hours[-3]["hour"].startswith(datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%dT%H:00"))


def test_station_api_shows_config_counts_and_the_loaded_model(dash: Dash) -> None:
    viewer, _ = dash.login("vera")
    assert dash.anon().get("/api/stations/line-1").status_code == 401
    assert viewer.get("/api/stations/elsewhere").status_code == 404
    body = viewer.get("/api/stations/line-1").json()
    assert body["summary"]["inspections"] == 6 and body["summary"]["flagged"] == 3
    assert body["model"] is None  # no worker has said what it loaded
    assert len(body["hourly"]) == 24
    model = {"backbone": "packaged:efficientnet-lite0", "threshold": 0.3, "normal_scores": [0.1, 0.2]}
    sync = redis.Redis.from_url(dash.redis_url)
    sync.set(keys.station_model("line-1"), json.dumps(model))
    sync.close()
    assert viewer.get("/api/stations/line-1").json()["model"]["threshold"] == 0.3
    assert viewer.get("/stations/line-1").status_code == 200


def test_reference_images_are_served_by_listed_name_only(tmp_path: Path, dash: Dash) -> None:
    from fastapi.testclient import TestClient

    from config.service import load_settings
    from config.station import StationConfig
    from dashboards.app import create_app

    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(refs / name), np.full((8, 8, 3), 100, np.uint8))
    (refs / "notes.txt").write_text("not an image")
    config = StationConfig.model_validate(
        {"id": "line-1", "camera": {"source": 0}, "product": {"name": "bottle"}}
        | {"references": {"folder": str(refs), "k": 2}}
    )
    database_url = dash.store.engine.url.render_as_string(hide_password=False)
    settings = load_settings(data_dir=dash.data_dir, database_url=database_url)
    app = create_app(settings, dash.redis_url, ["line-1"], {"line-1": config})
    with TestClient(app) as client:
        viewer = As(client)
        viewer.post("/api/login", json={"username": "vera", "password": PASSWORD})
        body = viewer.get("/api/stations/line-1").json()
        assert body["references"] == [
            {"name": "a.png", "used": True},
            {"name": "b.png", "used": True},
            {"name": "c.png", "used": False},  # beyond k: shown greyed out
        ]
        assert viewer.get("/stations/line-1/references/a.png").status_code == 200
        assert As(client).get("/stations/line-1/references/a.png").status_code == 401
        for name in ("notes.txt", "..%2Fsecret_key", "%2e%2e", "missing.png"):
            assert viewer.get(f"/stations/line-1/references/{name}").status_code == 404, name


def test_api_tokens_act_with_their_users_role_until_revoked(dash: Dash) -> None:
    operator, csrf = dash.login("otto")
    made = operator.post("/api/tokens", json={"name": "MES bridge"}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201
    token = made.json()["token"]
    bot = dash.anon()
    auth = {"Authorization": f"Bearer {token}"}
    assert bot.get("/api/defects", headers=auth).json()["total"] == 3
    defect = bot.get("/api/defects", headers=auth).json()["items"][0]["id"]
    # no CSRF token needed: a bearer token is never sent by a browser on its own
    decided = bot.post(f"/api/defects/{defect}/review", json={"decision": "rejected"}, headers=auth)
    assert decided.status_code == 200 and decided.json()["reviewed_by"] == "otto"
    listed = operator.get("/api/tokens").json()
    assert [(t["name"], t["user"]) for t in listed] == [("MES bridge", "otto")]
    assert listed[0]["last_used_at"] and "token" not in listed[0]  # the value is never shown again
    viewer, viewer_csrf = dash.login("vera")  # somebody else's token cannot be revoked by a viewer
    assert (
        viewer.post(
            f"/api/tokens/{listed[0]['id']}/revoke", headers={"X-CSRF-Token": viewer_csrf}
        ).status_code
        == 404
    )
    assert (
        operator.post(f"/api/tokens/{listed[0]['id']}/revoke", headers={"X-CSRF-Token": csrf}).status_code
        == 204
    )
    assert bot.get("/api/defects", headers=auth).status_code == 401
    assert bot.get("/api/defects", headers={"Authorization": "Bearer lw_made-up"}).status_code == 401


def test_admins_manage_users_and_changes_apply_to_open_sessions(
    dash: Dash, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dashboards.auth

    monkeypatch.setattr(dashboards.auth, "ACCOUNT_CACHE_S", 0.0)  # no waiting for the cache in a test
    admin, csrf = dash.login("ada")
    operator, op_csrf = dash.login("otto")
    viewer, _ = dash.login("vera")
    new = {"username": "nina", "password": PASSWORD, "role": "operator"}
    assert operator.post("/api/users", json=new, headers={"X-CSRF-Token": op_csrf}).status_code == 403
    assert operator.get("/api/users").status_code == 403
    assert admin.post("/api/users", json=new, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert admin.post("/api/users", json=new, headers={"X-CSRF-Token": csrf}).status_code == 409
    short = {**new, "username": "nick", "password": "short"}
    assert admin.post("/api/users", json=short, headers={"X-CSRF-Token": csrf}).status_code == 422
    assert dash.login("nina")[0].get("/api/session").json()["role"] == "operator"

    # promote vera: her open session may review at once; disable otto: his session stops working
    assert (
        admin.post("/api/users/vera", json={"role": "operator"}, headers={"X-CSRF-Token": csrf}).status_code
        == 200
    )
    assert viewer.get("/api/session").json()["role"] == "operator"
    assert (
        admin.post("/api/users/otto", json={"disabled": True}, headers={"X-CSRF-Token": csrf}).status_code
        == 200
    )
    assert operator.get("/api/defects").status_code == 401
    assert dash.anon().post("/api/login", json={"username": "otto", "password": PASSWORD}).status_code == 401
    assert (
        admin.post("/api/users/ada", json={"disabled": True}, headers={"X-CSRF-Token": csrf}).status_code
        == 422
    )
    assert (
        admin.post("/api/users/ghost", json={"role": "viewer"}, headers={"X-CSRF-Token": csrf}).status_code
        == 404
    )
    names = {u["username"]: (u["role"], u["disabled"]) for u in admin.get("/api/users").json()}
    assert names["vera"] == ("operator", False) and names["otto"] == ("operator", True)
    assert admin.get("/admin").status_code == 200


def test_metrics_need_a_login_or_a_token(dash: Dash) -> None:
    assert dash.anon().get("/metrics").status_code == 401
    viewer, csrf = dash.login("vera")
    token = viewer.post("/api/tokens", json={"name": "prometheus"}, headers={"X-CSRF-Token": csrf}).json()
    resp = dash.anon().get("/metrics", headers={"Authorization": f"Bearer {token['token']}"})
    assert resp.status_code == 200 and "python_info" in resp.text
