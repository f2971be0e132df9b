"""The interim dashboard in a real browser (Debian chromium driven by Playwright) on real stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from config.service import load_settings
from dashboards.app import create_app
from pipeline import keys
from pipeline.evidence import encode_heatmap, write_evidence
from pipeline.redis_server import start_embedded
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.dashboards.conftest import add_users, browser_login, http_login, serve
from tests.pipeline.store.factories import make_result

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def dashboard(tmp_path: Path):
    """A dashboard on a real SQLite store and embedded Redis, holding one flagged defect."""
    settings = load_settings(data_dir=tmp_path)
    upgrade(settings.effective_database_url)
    frame = np.full((120, 160, 3), 140, np.uint8)
    _, jpeg = cv2.imencode(".jpg", frame)
    heat = np.zeros((48, 64), np.uint8)
    heat[10:20, 10:20] = 255
    flagged = make_result("line-1", 2, flagged=True, heatmap_png=encode_heatmap(heat))
    paths = write_evidence(tmp_path, flagged, jpeg.tobytes())
    with Store.open(settings.effective_database_url) as store:
        store.upsert_station("line-1", "Line one", "bottle", "{}")
        store.record([make_result("line-1", 1), flagged], {flagged.id: paths})
        add_users(store)
    with start_embedded(tmp_path / "r") as redis_server:
        import redis

        sync = redis.Redis.from_url(redis_server.url)
        sync.hset(
            keys.station_state("line-1"), mapping={"state": json.dumps("online"), "fps": json.dumps(4.9)}
        )
        with serve(create_app(settings, redis_server.url, ["line-1"])) as url:
            yield url
        sync.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Debian chromium (make test installs it as root)")
def test_page_shows_station_counts_state_and_evidence(dashboard: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(dashboard + "/")
        assert "/login" in page.url  # nobody sees the line without logging in
        browser_login(page, dashboard, "vera")
        row = page.locator("table tr", has_text="line-1")
        cells = row.locator("td").all_inner_texts()
        assert cells[:7] == ["line-1", "bottle", "online", "4.9", "2", "1", "1"]
        img = page.locator("figure img").first
        img.wait_for()
        assert page.evaluate("(el) => el.naturalWidth", img.element_handle()) == 160
        assert "top left" in page.locator("figcaption").first.inner_text()
        browser.close()


def test_evidence_route_refuses_paths_outside_the_evidence_folder(dashboard: str) -> None:
    cookies, _ = http_login(dashboard, "vera")
    for path in ("../linewatch.db", "evidence/../linewatch.db", "%2e%2e/linewatch.db", "linewatch.db"):
        assert httpx.get(f"{dashboard}/evidence/{path}", cookies=cookies).status_code == 404
    body = httpx.get(f"{dashboard}/api/stations", cookies=cookies).json()
    assert body[0]["station_id"] == "line-1" and body[0]["flagged"] == 1
