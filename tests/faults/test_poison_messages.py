"""Poison on the recorder's streams: truncated results, unknown versions, broken JSON, numbers no
database takes, a corrupt evidence JPEG, malformed verdicts and originals. Each is dead-lettered
(or, for a picture, counted) with its reason; the valid messages around them are all stored.

The worker's side (corrupt JPEGs, truncated frames, unknown versions on the frame stream) is
``test_poison_frames_are_dead_lettered_and_valid_ones_inspected`` in test_pipeline_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from pipeline import keys, streams
from pipeline.capture import encode_jpeg
from pipeline.messages import FrameMessage, VerdictMessage
from pipeline.recorder import Recorder, RecorderOptions
from pipeline.redis_server import start_embedded
from pipeline.store.models import Defect
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.faults.harness import entries, pending_ids, stored_seqs, wait_for
from tests.pipeline.store.factories import make_result

STATION = "poison"


FRAME = encode_jpeg(np.full((48, 64, 3), 128, np.uint8), 90)


def good(seq: int, flagged: bool = False) -> dict[str, Any]:
    frame = FRAME if flagged else b""
    return make_result(STATION, seq, flagged=flagged, frame_jpeg=frame, captured_at=time.time()).to_fields()


async def dead_letters(r: streams.Redis, stream: str) -> dict[str, str]:
    """Id of each dead-lettered entry of ``stream`` -> the reason recorded with it."""
    rows = await entries(r, keys.dead_letter(stream))
    return {streams._text(f[b"source_id"]): f[b"error"].decode() for _, f in rows}


async def test_poison_on_the_recorders_streams_is_dead_lettered_and_the_rest_stored(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'linewatch.db'}"
    upgrade(db)
    store = Store.open(db)
    results, verdicts, originals = keys.results(STATION), keys.verdicts(STATION), keys.evidence(STATION)
    nan = good(4)
    nan["meta"] = json.dumps({**json.loads(nan["meta"]), "score": float("nan")})
    poison_results = [  # (fields, reason the dead letter must give)
        ({k: v for k, v in good(2).items() if k != "meta"}, "no field 'meta'"),
        ({**good(3), "v": 1}, "version '1'"),
        ({**good(5), "meta": "{not json"}, "malformed result"),
        ({**good(6), "meta": json.dumps({"station_id": STATION})}, "malformed result"),
    ]
    with start_embedded(tmp_path / "r") as server:
        r = streams.connect(server.url)
        recorder = Recorder(
            r, store, [STATION], tmp_path, "rec", RecorderOptions(block_ms=100), explained={STATION}
        )
        for stream in (results, verdicts, originals):
            await streams.ensure_group(r, stream, keys.RECORD_GROUP)
        stop = asyncio.Event()
        task = asyncio.create_task(recorder.run(stop))
        try:
            bad_ids = {}
            await streams.add(r, results, good(1), maxlen=None)
            for fields, why in poison_results:
                bad_ids[await streams.add(r, results, fields, maxlen=None)] = why
            nan_id = await streams.add(r, results, nan, maxlen=None)  # a number no database stores
            bad_ids[nan_id] = "score is nan"
            when = time.time()
            broken = b"\xff\xd8 not a jpeg"
            corrupt = make_result(STATION, 7, flagged=True, frame_jpeg=broken, captured_at=when)
            await streams.add(r, results, corrupt.to_fields(), maxlen=None)
            await streams.add(r, results, good(8, flagged=True), maxlen=None)

            bad_verdict = {"v": 3, "meta": json.dumps({"station_id": STATION, "seq": 8, "status": "maybe"})}
            verdict_id = await streams.add(r, verdicts, bad_verdict, maxlen=None)
            ok_verdict = VerdictMessage(STATION, 8, "failed", 8, time.time(), note="server down")
            await streams.add(r, verdicts, ok_verdict.to_fields(), maxlen=None)
            truncated = {
                k: v
                for k, v in FrameMessage(STATION, 8, time.time(), b"x", 2, 2).to_fields().items()
                if k != "h"
            }
            original_id = await streams.add(r, originals, truncated, maxlen=None)

            async def settled() -> bool:
                assert not task.done(), task.exception()
                pending = [await pending_ids(r, s, keys.RECORD_GROUP) for s in (results, verdicts, originals)]
                lag = [await streams.lag(r, s, keys.RECORD_GROUP) for s in (results, verdicts, originals)]
                return store.count_inspections(STATION) >= 3 and not any(pending) and not any(lag)

            await wait_for(settled, 30, "the recorder to get through the poison")
            assert await asyncio.to_thread(stored_seqs, store, STATION) == [1, 7, 8]  # the valid ones
            assert await asyncio.to_thread(store.flagged_seqs, STATION) == [7, 8]
            assert recorder.evidence_failures == 1  # seq 7's picture; its defect row is there
            dead = {
                streams._text(f[b"source_id"]): f[b"error"].decode()
                for _, f in await entries(r, keys.dead_letter(results))
            }
            assert bad_ids.keys() <= dead.keys()
            for entry_id, why in bad_ids.items():
                assert why in dead[entry_id], dead[entry_id]
            dead_verdicts = {
                streams._text(f[b"source_id"]) for _, f in await entries(r, keys.dead_letter(verdicts))
            }
            assert verdict_id in dead_verdicts
            dead_originals = {
                streams._text(f[b"source_id"]) for _, f in await entries(r, keys.dead_letter(originals))
            }
            assert original_id in dead_originals
            counters = await streams.counters(r)
            assert counters[streams.counter_field("dead", results)] == len(bad_ids)
            with store.engine.connect() as conn:  # the valid verdict reached its defect
                status = conn.execute(
                    select(Defect.verdict_status).where(Defect.station_id == STATION, Defect.seq == 8)
                ).scalar_one()
            assert status == "failed"
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await r.aclose()
            store.close()
