"""The data dir's evidence folder fills up (a 256 kB tmpfs mounted on it): evidence writing fails
loudly (logged, counted, a problem on the dashboard and in status), inspection rows and defects
keep being stored, and once there is room again the problem clears by itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from config.service import load_settings
from dashboards.app import create_app
from pipeline import keys, problems, streams
from pipeline.capture import encode_jpeg
from pipeline.recorder import EVIDENCE_PROBLEM, Recorder
from pipeline.redis_server import start_embedded
from pipeline.store.models import Defect
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.dashboards.conftest import PASSWORD, add_users
from tests.faults.harness import wait_for
from tests.pipeline.store.factories import make_result

STATION = "line-1"
RESULTS = 60  # every third flagged: twenty defects' evidence, far more than the folder holds


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose evidence folder is a 256 kB file system."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(evidence)], capture_output=True, text=True
    )
    if done.returncode != 0:
        message = f"cannot mount a small tmpfs (needs root): {done.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI runs as root, so it must work)")
        pytest.skip(message)
    try:
        yield tmp_path
    finally:
        subprocess.run(["umount", "-l", str(evidence)], check=False)


def noisy_frame(seed: int) -> bytes:
    """A JPEG that does not compress well: about 70 kB, with its overlay over 100 kB per defect."""
    rng = np.random.default_rng(seed)
    return encode_jpeg(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), 90)


async def test_a_full_disk_stops_evidence_not_inspections(full_disk: Path) -> None:
    data_dir = full_disk
    settings = load_settings(data_dir=data_dir)
    upgrade(settings.effective_database_url)
    store = Store.open(settings.effective_database_url)
    add_users(store)
    with start_embedded(data_dir / "r") as server:
        r = streams.connect(server.url)
        recorder = Recorder(r, store, [STATION], data_dir, "rec")
        stop = asyncio.Event()
        task = asyncio.create_task(recorder.run(stop))
        try:
            for seq in range(1, RESULTS + 1):
                flagged = seq % 3 == 0
                frame = noisy_frame(seq) if flagged else b""
                res = make_result(STATION, seq, flagged=flagged, frame_jpeg=frame, captured_at=time.time())
                await streams.add(r, keys.results(STATION), res.to_fields(), maxlen=None)

            async def all_stored() -> bool:
                assert not task.done(), task.exception()
                return await asyncio.to_thread(store.count_inspections, STATION) >= RESULTS

            await wait_for(all_stored, 60, "every inspection row despite the full disk")
            assert recorder.evidence_failures > 0
            with store.engine.connect() as conn:
                total, without = conn.execute(
                    select(func.count(), func.count().filter(Defect.evidence_path.is_(None)))
                    .select_from(Defect)
                    .where(Defect.station_id == STATION)
                ).one()
            assert total == RESULTS // 3  # every defect recorded, with or without its picture
            assert without == recorder.evidence_failures
            raised = {p["name"]: p for p in await problems.current(r)}
            assert "No space left on device" in raised[EVIDENCE_PROBLEM]["message"]

            # the dashboard shows it: the API and the live page's summary part
            app = create_app(settings, server.url, [STATION])
            with TestClient(app) as client:
                login = client.post("/api/login", json={"username": "vera", "password": PASSWORD})
                assert login.status_code == 200
                shown = client.get("/api/problems").json()
                assert any("cannot be written" in p["message"] for p in shown)
                page = client.get("/parts/summary").text
                assert "role=alert" in page and "No space left on device" in page

            # room again: the next evidence file is written and the problem goes away
            for f in (data_dir / "evidence").rglob("*.jpg"):
                f.unlink()  # the operator makes room
            res = make_result(
                STATION, RESULTS + 1, flagged=True, frame_jpeg=noisy_frame(0), captured_at=time.time()
            )
            await streams.add(r, keys.results(STATION), res.to_fields(), maxlen=None)

            async def cleared() -> bool:
                return not any(p["name"] == EVIDENCE_PROBLEM for p in await problems.current(r))

            await wait_for(cleared, 30, "the problem to clear once evidence is written again")
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await r.aclose()
            store.close()
