"""The review queue in Debian's chromium: an operator confirms a defect with the keyboard and the
database changes; a viewer sees the queue but cannot decide. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis
from sqlalchemy import select

from config.service import load_settings
from config.station import StationConfig
from dashboards.app import create_app
from pipeline import keys
from pipeline.redis_server import start_embedded
from pipeline.store.models import Defect, Review
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.dashboards.conftest import add_users, browser_login, seed_defects, serve
from tests.dashboards.test_interim_page import CHROMIUM

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    settings = load_settings(data_dir=tmp_path)
    upgrade(settings.effective_database_url)
    store = Store.open(settings.effective_database_url)
    add_users(store)
    seed_defects(store, tmp_path)
    with (
        start_embedded(tmp_path / "r") as redis_server,
        serve(create_app(settings, redis_server.url, ["line-1"])) as url,
    ):
        yield url, store
    store.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Debian chromium (make test installs it as root)")
def test_an_operator_confirms_and_a_viewer_cannot(served: tuple[str, Store]) -> None:
    from playwright.sync_api import sync_playwright

    url, store = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        operator = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
        browser_login(operator, url, "otto")
        operator.goto(url + "/review")
        operator.locator(".item").first.wait_for()
        assert operator.locator(".item").count() == 3
        first = operator.locator(".item").first
        assert "line-1 #6" in first.inner_text() and "score" in first.inner_text()
        assert operator.evaluate("(img) => img.naturalWidth", first.locator("img").first.element_handle()) > 0
        operator.screenshot(path=str(ARTIFACTS / "review-queue.png"))
        operator.keyboard.press("c")  # confirm the current (newest) defect
        operator.wait_for_function("document.querySelectorAll('.item').length === 2")
        with store.engine.connect() as conn:
            state = conn.execute(select(Defect.review_state).where(Defect.seq == 6)).scalar_one()
            who = conn.execute(select(Review.username)).scalars().all()
        assert state == "confirmed" and who == ["otto"]

        viewer = browser.new_context().new_page()
        browser_login(viewer, url, "vera")
        viewer.goto(url + "/review")
        viewer.locator(".item").first.wait_for()
        assert viewer.locator(".item button").count() == 0  # nothing to press
        viewer.keyboard.press("r")
        viewer.wait_for_timeout(500)
        with store.engine.connect() as conn:
            assert conn.execute(select(Review.username)).scalars().all() == ["otto"]
        viewer.screenshot(path=str(ARTIFACTS / "review-viewer.png"))
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Debian chromium (make test installs it as root)")
def test_history_filters_pages_and_links_the_csv(served: tuple[str, Store]) -> None:
    from playwright.sync_api import sync_playwright

    url, _ = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_context(viewport={"width": 1300, "height": 800}).new_page()
        browser_login(page, url, "vera")
        page.goto(url + "/history")
        page.wait_for_function("document.querySelectorAll('#rows tr').length === 3")
        assert "1–3 of 3" in page.locator("#range").inner_text()
        page.fill("input[name=min_score]", "0.9")
        page.click("#filters button[type=submit]")
        page.wait_for_function("document.querySelectorAll('#rows tr').length === 0")
        assert "min_score=0.9" in page.locator("#csv").get_attribute("href")
        page.screenshot(path=str(ARTIFACTS / "history.png"))
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Debian chromium (make test installs it as root)")
def test_the_station_page_shows_counts_chart_and_configuration(served: tuple[str, Store]) -> None:
    from playwright.sync_api import sync_playwright

    url, _ = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_context(viewport={"width": 1100, "height": 1200}).new_page()
        browser_login(page, url, "vera")
        page.goto(url + "/")
        page.click("#summary a[href='/stations/line-1']")
        page.wait_for_function("document.querySelectorAll('#chart rect.flagged').length === 24")
        counts = page.locator("#counts").inner_text()
        assert "inspected\n6" in counts and "flagged\n3" in counts
        assert "no worker has loaded this station yet" in page.locator("#model").inner_text()
        assert page.locator("#config").inner_text().strip() == "{}"  # what the seeded row holds
        page.screenshot(path=str(ARTIFACTS / "station.png"))
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Debian chromium (make test installs it as root)")
def test_the_station_page_marks_a_reference_that_scores_like_a_defect(tmp_path: Path) -> None:
    """A worker's model says held-out reference 2 of 3 reached the threshold (another lighting, a
    bad part among the references): its thumbnail is outlined and it is named by file."""
    from playwright.sync_api import sync_playwright

    settings = load_settings(data_dir=tmp_path)
    upgrade(settings.effective_database_url)
    store = Store.open(settings.effective_database_url)
    add_users(store)
    seed_defects(store, tmp_path)
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("a.png", "b.png", "c.png", "d.png"):
        cv2.imwrite(str(refs / name), np.full((60, 80, 3), 120, np.uint8))
    config = StationConfig.model_validate(
        {"id": "line-1", "camera": {"source": 0}, "product": {"name": "bottle"}}
        | {"references": {"folder": str(refs), "k": 3}}
    )
    model = {
        "backbone": "packaged:efficientnet-lite0",
        "device": "cpu",
        "image_size": 320,
        "bank": [512, 1024, 1024],
        "decoder": False,
        "threshold": 0.3,
        "normal_level": 0.1,
        "normal_scores": [0.2, 0.45, 0.21],
        "suspect_references": [1],
    }
    with start_embedded(tmp_path / "r") as redis_server:
        sync = redis.Redis.from_url(redis_server.url)
        sync.set(keys.station_model("line-1"), json.dumps(model))
        sync.close()
        with (
            serve(create_app(settings, redis_server.url, ["line-1"], {"line-1": config})) as url,
            sync_playwright() as p,
        ):
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_context(viewport={"width": 1100, "height": 1400}).new_page()
            browser_login(page, url, "vera")
            page.goto(url + "/stations/line-1")
            page.wait_for_function("document.querySelectorAll('#refs img').length === 4")
            suspect = page.locator("#refs img.suspect")
            assert suspect.count() == 1
            assert "b.png" in suspect.get_attribute("title")
            assert page.locator("#refs img.unused").count() == 1  # d.png, beyond k
            assert "references that score like defects\nb.png" in page.locator("#model").inner_text()
            page.screenshot(path=str(ARTIFACTS / "station-suspect-reference.png"), full_page=True)
            browser.close()
    store.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no Debian chromium (make test installs it as root)")
@pytest.mark.parametrize("target", ["/%5Cevil.example/", "/%09/evil.example/", "//evil.example/", "/review"])
def test_login_returns_only_to_a_page_of_this_site(served: tuple[str, Store], target: str) -> None:
    """``next=/\\evil.example/`` and ``next=/<tab>/evil.example/`` passed the old check (starts with
    one slash, not two) and the browser went to http://evil.example/."""
    from playwright.sync_api import sync_playwright

    from tests.dashboards.conftest import PASSWORD

    url, _ = served
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.goto(f"{url}/login?next={target}")
        page.fill("input[name=username]", "vera")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/login" not in u, timeout=15_000)
        landed = page.url
        browser.close()
    assert landed.startswith(url + "/"), landed
    if target == "/review":
        assert landed == url + "/review"
