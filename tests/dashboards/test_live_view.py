"""The live view end to end: frames and results in Redis -> overlay rendering -> one VP8 encoder ->
WebRTC to several aiortc viewers and to Debian's chromium, with events on the data channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from config.service import load_settings
from dashboards.app import create_app
from pipeline import keys
from pipeline.capture import encode_jpeg
from pipeline.demo_assets import render_part
from pipeline.evidence import encode_heatmap
from pipeline.messages import FrameMessage
from pipeline.redis_server import start_embedded
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.dashboards.conftest import PASSWORD, add_users, browser_login, http_login, serve
from tests.dashboards.test_interim_page import CHROMIUM
from tests.pipeline.store.factories import make_result

STATION = "line-1"


@dataclass
class Live:
    url: str
    app: Any
    stop: threading.Event


def publish(redis_url: str, stop: threading.Event, fps: float = 10.0) -> None:
    """Frames and their results as capture and a worker write them; every 4th one flagged."""
    r = redis.Redis.from_url(redis_url)
    r.hset(keys.station_state(STATION), mapping={"state": json.dumps("online"), "fps": json.dumps(fps)})
    heat = np.zeros((48, 64), np.uint8)
    heat[30:44, 40:60] = 255
    seq = 0
    while not stop.is_set():
        flagged = seq % 4 == 3
        image, _ = render_part(seq, "hole" if flagged else None)
        jpeg = encode_jpeg(image, 90)
        frame = FrameMessage(STATION, seq, time.time(), jpeg, image.shape[1], image.shape[0])
        r.xadd(keys.frames(STATION), frame.to_fields())  # type: ignore[arg-type]
        result = make_result(
            STATION, seq, flagged=flagged, heatmap_png=encode_heatmap(heat if flagged else heat * 0)
        )
        r.xadd(keys.results(STATION), result.to_fields())  # type: ignore[arg-type]
        seq += 1
        time.sleep(1 / fps)
    r.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    settings = load_settings(data_dir=tmp_path, live_height=360, live_fps=10)
    upgrade(settings.effective_database_url)
    with Store.open(settings.effective_database_url) as store:
        add_users(store)
    with start_embedded(tmp_path / "r") as redis_server:
        app = create_app(settings, redis_server.url, [STATION])
        with serve(app) as url:
            stop = threading.Event()
            publisher = threading.Thread(target=publish, args=(redis_server.url, stop), daemon=True)
            publisher.start()
            yield Live(url, app, stop)
            stop.set()
            publisher.join(timeout=5)


@dataclass
class Viewer:
    pc: RTCPeerConnection
    frames: list[Any]
    events: list[dict[str, Any]]
    tasks: list[asyncio.Task[None]]


async def connect_viewer(url: str, station: str = STATION, user: str = "vera") -> Viewer:
    pc = RTCPeerConnection()
    viewer = Viewer(pc, [], [], [])
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("events")
    channel.on("message", lambda m: viewer.events.append(json.loads(m)))

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def pull() -> None:
            with contextlib.suppress(MediaStreamError):  # the connection closed
                while True:
                    viewer.frames.append(await track.recv())

        viewer.tasks.append(asyncio.ensure_future(pull()))

    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient() as client:
        login = await client.post(f"{url}/api/login", json={"username": user, "password": PASSWORD})
        login.raise_for_status()
        resp = await client.post(
            f"{url}/api/stations/{station}/webrtc/offer",
            json={"sdp": pc.localDescription.sdp, "type": pc.localDescription.type},
            headers={"X-CSRF-Token": login.json()["csrf"]},
            timeout=20,
        )
    resp.raise_for_status()
    await pc.setRemoteDescription(RTCSessionDescription(**resp.json()))
    return viewer


async def test_two_viewers_get_overlay_video_from_one_encoder_and_events(live: Live) -> None:
    viewers = [await connect_viewer(live.url) for _ in range(2)]
    encoder = live.app.state.live.encoders[STATION]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        if all(len(v.frames) >= 20 for v in viewers) and all(
            {"inspection", "defect", "state"} <= {e["type"] for e in v.events} for v in viewers
        ):
            break
    for v in viewers:
        assert len(v.frames) >= 20, f"a viewer received only {len(v.frames)} frames"
        last = v.frames[-1].to_ndarray(format="bgr24")
        assert last.shape == (360, 640, 3)  # the configured height, 16:9
        assert last.std() > 10  # a real picture, not a flat placeholder
        types = {e["type"] for e in v.events}
        assert {"inspection", "defect", "state"} <= types, types
        defect = next(e for e in v.events if e["type"] == "defect")
        assert defect["flagged"] and defect["seq"] % 4 == 3 and defect["regions"]
    assert encoder.feed.rendered > 0  # inspected frames with overlays, not the waiting image
    # one encode serves both: each viewer got (nearly) every encoded frame, not one encode each
    for v in viewers:
        assert encoder.encoded >= len(v.frames) >= encoder.encoded // 2
    for v in viewers:
        await v.pc.close()
    for _ in range(40):  # the last viewer gone: rendering and encoding stop
        if not encoder.viewers:
            break
        await asyncio.sleep(0.25)
    assert not encoder.viewers
    count = encoder.encoded
    await asyncio.sleep(1.0)
    assert encoder.encoded == count


@pytest.mark.parametrize(
    ("station", "body", "status"),
    [
        ("nope", {"sdp": "v=0", "type": "offer"}, 404),
        (STATION, {"sdp": "v=0", "type": "answer"}, 422),
        (STATION, {"type": "offer"}, 422),
        (STATION, {"sdp": "this is not SDP", "type": "offer"}, 400),
    ],
)
def test_bad_offers_are_refused_with_a_reason(live: Live, station: str, body: dict, status: int) -> None:
    cookies, csrf = http_login(live.url, "vera")
    url = f"{live.url}/api/stations/{station}/webrtc/offer"
    assert httpx.post(url, json=body, timeout=20).status_code == 401  # anonymous: no live view
    assert httpx.post(url, json=body, cookies=cookies, timeout=20).status_code == 403  # no CSRF token
    resp = httpx.post(url, json=body, cookies=cookies, headers={"X-CSRF-Token": csrf}, timeout=20)
    assert resp.status_code == status, resp.text
    assert resp.json()["detail"]


@pytest.mark.skipif(CHROMIUM is None, reason="no Debian chromium (make test installs it as root)")
def test_the_live_page_plays_the_overlay_video_in_chromium(live: Live, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        browser_login(page, live.url, "vera")
        page.goto(live.url + "/")
        video = page.locator(f"article[data-station='{STATION}'] video")
        page.wait_for_function("(v) => v.currentTime > 0.5", arg=video.element_handle(), timeout=30_000)
        first = page.evaluate("(v) => v.currentTime", video.element_handle())
        page.wait_for_timeout(1500)
        assert page.evaluate("(v) => v.currentTime", video.element_handle()) > first  # it plays
        spread = page.evaluate(
            """(v) => { const c = document.createElement('canvas'); c.width = v.videoWidth;
            c.height = v.videoHeight; const g = c.getContext('2d'); g.drawImage(v, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data; let lo = 255, hi = 0;
            for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
            return [c.width, c.height, hi - lo]; }""",
            video.element_handle(),
        )
        assert spread[:2] == [640, 360] and spread[2] > 50  # a real frame, not a blank one
        page.wait_for_function(
            f"document.querySelector(\"article[data-station='{STATION}'] .last\").textContent.includes('#')"
        )
        page.screenshot(path=str(tmp_path / "live.png"))
        browser.close()
