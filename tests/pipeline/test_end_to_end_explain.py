"""End to end with the explainer: capture → worker → explain (loopback LLM server) → recorder → SQL.

The demo video has 150 frames of which 21 show a defect. Every request the LLM server receives must
come from a flagged frame (one per defect episode), every flagged frame must end with a verdict on its
defect row, and no unflagged frame may ever reach the LLM.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.loader import load_station
from pipeline import streams
from pipeline.capture_role import run_capture
from pipeline.recorder import Recorder
from pipeline.redis_server import start_embedded
from pipeline.store.models import Defect, Inspection
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.pipeline.test_end_to_end import make_station
from tests.workers.explain.chat_server import ChatServer, running_chat_server
from workers.explain.backends.factory import build_backends
from workers.explain.role import Explainer, ExplainOptions
from workers.inspect_worker import InspectWorker
from workers.station_loader import load_inspectors

pytestmark = pytest.mark.slow

SCORE = re.compile(r"scored this frame (\d+\.\d\d)")


def _rows(store: Store, model: type[Inspection] | type[Defect]) -> list:
    with Session(store.engine) as session:
        return list(session.scalars(select(model)))


async def _run(tmp_path: Path, server: ChatServer) -> Store:
    station_file, _, frames = make_station(tmp_path, "e2e-explain")
    station_file.write_text(
        station_file.read_text()
        + f"explainer:\n  backend: openai\n  model: tiny\n  base_url: {server.url}\n  timeout_s: 10\n"
    )
    station = load_station(station_file)
    data_dir = tmp_path / "data"
    url = f"sqlite:///{data_dir / 'linewatch.db'}"
    with start_embedded(data_dir) as redis_server:
        upgrade(url)
        store = Store.open(url)
        inspectors = await asyncio.to_thread(load_inspectors, [station], data_dir, "cpu")
        from config.service import load_settings

        backends = build_backends([station], load_settings(data_dir=data_dir), "cpu")
        clients = [streams.connect(redis_server.url) for _ in range(3)]
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(run_capture(redis_server.url, [station], stop)),
            asyncio.create_task(InspectWorker(clients[0], inspectors, "w1").run(stop)),
            asyncio.create_task(
                Explainer(clients[1], [station], backends, "ex", ExplainOptions(block_ms=200)).run(stop)
            ),
            asyncio.create_task(
                Recorder(clients[2], store, [station.id], data_dir, "rec", explained={station.id}).run(stop)
            ),
        ]
        try:
            for _ in range(240):  # up to two minutes on a busy 2-core machine
                await asyncio.sleep(0.5)
                defects = _rows(store, Defect)
                if store.count_inspections(station.id) >= frames and all(
                    d.verdict_status != "pending" for d in defects
                ):
                    break
            await asyncio.sleep(1.0)  # a late duplicate request would show up now
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
            for c in clients:
                await c.aclose()
            await backends[station.id].close()
    return store


async def test_only_flagged_frames_reach_the_llm(tmp_path: Path) -> None:
    with running_chat_server() as server:
        store = await _run(tmp_path, server)
    inspections = _rows(store, Inspection)
    defects = _rows(store, Defect)
    store.close()

    flagged = [i for i in inspections if i.flagged]
    assert len(inspections) == 150 and 15 <= len(flagged) <= 25
    assert len(defects) == len(flagged)
    # every flagged frame has a verdict: its own answer, or its episode head's
    assert all(d.verdict_status in ("ok", "episode") for d in defects), [d.verdict_status for d in defects]
    heads = [d for d in defects if d.verdict_status == "ok"]
    assert len(server.requests) == len(heads) >= 1  # one request per episode, none per good frame
    assert all(d.verdict_agrees is True and d.verdict_defect_type == "scratch" for d in heads)
    # each request describes a flagged frame: its score is one of theirs and above the threshold
    flagged_scores = {f"{i.score:.2f}" for i in flagged}
    for i in range(len(server.requests)):
        (score,) = SCORE.findall(server.texts(i))
        assert score in flagged_scores and float(score) >= 0.5
