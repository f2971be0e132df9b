"""The recorder's batches: entries of several stations with one entry id, results of the wrong
types, verdicts that wait for their defect row, and a stop during a database outage. Each case lost
or held up data before its fix (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from pipeline import keys, streams
from pipeline.capture import encode_jpeg
from pipeline.messages import FrameMessage, VerdictMessage
from pipeline.recorder import Recorder, RecorderOptions
from pipeline.redis_server import start_embedded
from pipeline.store.errors import StoreUnavailable
from pipeline.store.models import Defect
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.faults.harness import entries, pending_ids, stored_seqs
from tests.pipeline.store.factories import make_result

A, B = "st-a", "st-b"
JPEG = encode_jpeg(np.full((48, 64, 3), 128, np.uint8), 90)


def open_store(tmp_path: Path) -> Store:
    db = f"sqlite:///{tmp_path / 'linewatch.db'}"
    upgrade(db)
    return Store.open(db)


def with_meta(station: str, number: int, **changes: Any) -> dict[str, Any]:
    fields = make_result(station, number, captured_at=time.time()).to_fields()
    fields["meta"] = json.dumps({**json.loads(str(fields["meta"])), **changes})
    return fields


async def dead_letter_reasons(r: streams.Redis, stream: str) -> list[str]:
    return [f[b"error"].decode() for _, f in await entries(r, keys.dead_letter(stream))]


async def one_pass(recorder: Recorder) -> None:
    await recorder.record(await recorder._next_batch(), asyncio.Event())


async def test_a_bad_result_is_dead_lettered_when_another_stations_result_has_its_entry_id(tmp_path):
    """A worker writes several stations' results in one pipeline, so their streams often hold the
    same entry id. The recorder paired entries and results by entry id: a bad result of one
    station was acked unstored, or a good one of the other dead-lettered."""
    store = open_store(tmp_path)
    with start_embedded(tmp_path / "r") as server:
        r = streams.connect(server.url)
        recorder = Recorder(r, store, [A, B], tmp_path, "rec", RecorderOptions(block_ms=100))
        for stream in recorder.inputs:
            await streams.ensure_group(r, stream, keys.RECORD_GROUP)
        await r.xadd(keys.results(A), with_meta(A, 1, score=float("nan")), id="1000-0")
        await r.xadd(keys.results(B), with_meta(B, 1), id="1000-0")
        await one_pass(recorder)
        assert stored_seqs(store, A) == [] and stored_seqs(store, B) == [1]
        nan = f"result {A}:1: score is nan, not a finite number"
        assert await dead_letter_reasons(r, keys.results(A)) == [nan]
        assert await dead_letter_reasons(r, keys.results(B)) == []
        for station in (A, B):
            assert await pending_ids(r, keys.results(station), keys.RECORD_GROUP) == set()
        await r.aclose()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"score": None}, "score is None"),
        ({"seq": "7"}, "seq is '7'"),
        ({"captured_at": True}, "captured_at is True"),
        ({"regions": ["box"]}, "are not objects"),
        ({"flagged": 1}, "flagged is 1"),
    ],
)
async def test_a_result_of_the_wrong_types_is_dead_lettered_and_its_batch_stored(tmp_path, change, why):
    """Valid JSON with a null score passed parsing and crashed the insert (TypeError): the recorder
    exited, the batch came back with it after every restart, and all of it was dead-lettered."""
    store = open_store(tmp_path)
    results = keys.results(A)
    with start_embedded(tmp_path / "r") as server:
        r = streams.connect(server.url)
        recorder = Recorder(r, store, [A], tmp_path, "rec", RecorderOptions(block_ms=100))
        for stream in recorder.inputs:
            await streams.ensure_group(r, stream, keys.RECORD_GROUP)
        for seq in range(1, 4):
            await streams.add(r, results, with_meta(A, seq), maxlen=None)
        await streams.add(r, results, with_meta(A, 4, **change), maxlen=None)
        await streams.add(r, results, with_meta(A, 5), maxlen=None)
        await one_pass(recorder)
        assert stored_seqs(store, A) == [1, 2, 3, 5]
        (reason,) = await dead_letter_reasons(r, results)
        assert "malformed result message" in reason and why in reason
        assert await pending_ids(r, results, keys.RECORD_GROUP) == set()
        await r.aclose()


async def test_verdicts_of_two_stations_with_one_entry_id_are_both_stored(tmp_path):
    """Early verdicts wait, keyed by entry id alone: a second station's verdict with the same id
    was dropped from the wait, then claimed back and filtered out until it was dead-lettered."""
    store = open_store(tmp_path)
    store.record([make_result(B, 1, flagged=True, frame_jpeg=JPEG)])  # B's defect row exists, A's not yet
    with start_embedded(tmp_path / "r") as server:
        r = streams.connect(server.url)
        options = RecorderOptions(block_ms=50, claim_idle_ms=0, max_deliveries=4)
        recorder = Recorder(r, store, [A, B], tmp_path, "rec", options, explained={A, B})
        for stream in recorder.inputs:
            await streams.ensure_group(r, stream, keys.RECORD_GROUP)
        for station, note in ((A, "a"), (B, "b")):
            verdict = VerdictMessage(station, 1, "failed", 1, time.time(), note=note)
            await r.xadd(keys.verdicts(station), verdict.to_fields(), id="2000-0")
        for _ in range(6):  # A's verdict keeps waiting; B's must be stored at once, and stay so
            await one_pass(recorder)
            await recorder.verdicts.retry_if_due()
        with store.engine.connect() as conn:
            status = conn.execute(select(Defect.verdict_status).where(Defect.station_id == B)).scalar()
        assert status == "failed"
        assert await dead_letter_reasons(r, keys.verdicts(B)) == []
        assert await pending_ids(r, keys.verdicts(B), keys.RECORD_GROUP) == set()
        assert await pending_ids(r, keys.verdicts(A), keys.RECORD_GROUP) == {"2000-0"}  # still waits
        await r.aclose()


class _DownStore:
    """A database that is away."""

    def record(self, *args: Any) -> Any:
        raise StoreUnavailable("down")

    def set_evidence_paths(self, *args: Any) -> Any:
        raise StoreUnavailable("down")


async def test_a_stop_during_a_database_outage_is_not_held_up_by_originals(tmp_path):
    """The originals' paths were retried for ever without looking at stop: the supervisor had to
    kill the recorder. Now it stops at once and leaves the entry pending for next time."""
    with start_embedded(tmp_path / "r") as server:
        r = streams.connect(server.url)
        options = RecorderOptions(block_ms=50, retry_max_s=0.5)
        recorder = Recorder(r, _DownStore(), [A], tmp_path, "rec", options)  # type: ignore[arg-type]
        for stream in recorder.inputs:
            await streams.ensure_group(r, stream, keys.RECORD_GROUP)
        stop = asyncio.Event()
        task = asyncio.create_task(recorder.run(stop))
        await asyncio.sleep(0.3)
        original = FrameMessage(A, 1, time.time(), JPEG, 64, 48)
        entry_id = await streams.add(r, keys.evidence(A), original.to_fields(), maxlen=None)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        assert await pending_ids(r, keys.evidence(A), keys.RECORD_GROUP) == {entry_id}
        await r.aclose()
