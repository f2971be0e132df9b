"""``linewatch worker``: reads frame batches across stations from Redis, inspects them, writes results."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from pipeline import keys, metrics, streams
from pipeline.evidence import encode_heatmap
from pipeline.messages import FrameMessage, MessageError, ResultMessage
from workers.frames import decode_frame
from workers.inspector import InspectionResult, Inspector

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    batch_size: int = 16  # frames per inspector call, across stations
    max_wait_ms: int = 30  # how long a partial batch waits for more frames (latency bound)
    claim_idle_ms: int = 15_000  # pending this long on a silent consumer -> taken over
    max_deliveries: int = 5  # then the frame goes to the dead-letter stream
    results_maxlen: int = 100_000  # results are consumed by the recorder; bound memory anyway
    flagged_maxlen: int = 2_000  # flagged results carry the frame: the explainer's backlog bound
    heartbeat_ttl_s: float = 10.0


@dataclass
class _Batch:
    """Frames being inspected: decoded frames, their stream entries, the running inspection."""

    frames: list[tuple[FrameMessage, np.ndarray]]
    entries: list[streams.Entry]
    results: asyncio.Task[list[InspectionResult]]


class InspectWorker:
    """One process per device: the model stays resident, frames flow through in batches."""

    def __init__(
        self,
        redis: streams.Redis,
        inspectors: dict[str, Inspector],
        name: str,
        options: WorkerOptions | None = None,
    ) -> None:
        self.r = redis
        self.inspectors = inspectors  # station id -> the Inspector holding its model
        self.name = name
        self.options = options or WorkerOptions()
        self.frame_streams = [keys.frames(s) for s in inspectors]
        self.inspected = 0
        self.dead = 0
        self._last_claim = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        for stream in self.frame_streams:
            await streams.reconnecting(
                partial(streams.ensure_group, self.r, stream, keys.INSPECT_GROUP), what=stream
            )
        logger.info("worker %s inspecting %s", self.name, ", ".join(self.inspectors))
        # two batches in flight: while the model works on one (in a thread), the loop reads and
        # decodes the next, so the model does not sit idle during Redis round trips
        inflight: _Batch | None = None
        while not stop.is_set():
            await streams.reconnecting(
                lambda: streams.heartbeat(self.r, "worker", self.name, self.options.heartbeat_ttl_s),
                what="heartbeat",
            )
            read = asyncio.create_task(streams.reconnecting(self._next_batch, what="frames"))
            if inflight is not None:
                await self._finish(inflight)  # published as soon as inspected, whatever the read does
                inflight = None
            entries = await read
            if entries:
                inflight = await self._start(entries)
        if inflight is not None:  # drain: what was read is inspected and acknowledged before exit
            await self._finish(inflight)
        logger.info("worker %s stopped after %d frames", self.name, self.inspected)

    async def _next_batch(self) -> list[streams.Entry]:
        opts = self.options
        # only taken-over frames can have been delivered before; fresh reads need no XPENDING check
        entries = await self._drop_exhausted(await self._claim_stale())
        if len(entries) < opts.batch_size:
            entries += await streams.read_batch(
                self.r,
                keys.INSPECT_GROUP,
                self.name,
                self.frame_streams,
                opts.batch_size - len(entries),
                1000,
            )
        deadline = time.monotonic() + opts.max_wait_ms / 1000
        while entries and len(entries) < opts.batch_size and time.monotonic() < deadline:
            more = await self._top_up(opts.batch_size - len(entries))
            if not more:
                await asyncio.sleep(0.003)
            entries += more
        return entries

    async def _top_up(self, count: int) -> list[streams.Entry]:
        # a non-blocking read: XREADGROUP without BLOCK returns at once
        query: dict[Any, Any] = dict.fromkeys(self.frame_streams, ">")
        reply: Any = await self.r.xreadgroup(keys.INSPECT_GROUP, self.name, query, count=count)
        return [
            streams.Entry(name.decode(), eid.decode(), fields)
            for name, items in reply or []
            for eid, fields in items
        ]

    async def _claim_stale(self) -> list[streams.Entry]:
        now = time.monotonic()
        if now - self._last_claim < self.options.claim_idle_ms / 4000:
            return []
        self._last_claim = now
        claimed: list[streams.Entry] = []
        for stream in self.frame_streams:
            claimed += await streams.claim_stale(
                self.r,
                stream,
                keys.INSPECT_GROUP,
                self.name,
                self.options.claim_idle_ms,
                self.options.batch_size,
            )
        if claimed:
            logger.warning("worker %s took over %d frames of a silent consumer", self.name, len(claimed))
        return claimed

    async def _drop_exhausted(self, entries: list[streams.Entry]) -> list[streams.Entry]:
        keep: list[streams.Entry] = []
        for stream in {e.stream for e in entries}:
            mine = [e for e in entries if e.stream == stream]
            ok, dead = await streams.dead_letter_if_exhausted(
                self.r, stream, keys.INSPECT_GROUP, mine, self.options.max_deliveries
            )
            self.dead += dead
            keep += ok
        return keep

    async def process(self, entries: list[streams.Entry]) -> None:
        """Inspect one batch of entries, publish the results and acknowledge the frames."""
        batch = await self._start(entries)
        if batch is not None:
            await self._finish(batch)

    async def _start(self, entries: list[streams.Entry]) -> _Batch | None:
        """Decode and check the entries (bad ones go to the dead-letter stream), then start the
        inspection in a thread; None when no entry was usable."""
        frames, valid = [], []
        for entry in entries:
            try:
                msg = FrameMessage.from_fields(entry.fields)
                if msg.station_id not in self.inspectors:
                    raise MessageError(f"station {msg.station_id!r} is not configured on this worker")
                size = self.inspectors[msg.station_id].stations[msg.station_id].image_size
                image = decode_frame(msg.jpeg, msg.width, msg.height, size)
                if image is None:
                    raise MessageError("JPEG payload does not decode")
            except MessageError as e:
                await streams.reconnecting(
                    partial(streams.dead_letter, self.r, entry.stream, keys.INSPECT_GROUP, entry, str(e)),
                    what=entry.stream,
                )
                self.dead += 1
                continue
            frames.append((msg, image))
            valid.append(entry)
        if not frames:
            return None
        return _Batch(frames, valid, asyncio.create_task(asyncio.to_thread(self._inspect, frames)))

    async def _finish(self, batch: _Batch) -> None:
        results = await batch.results
        await streams.reconnecting(lambda: self._publish(batch.frames, results), what="results")
        await streams.reconnecting(lambda: streams.ack(self.r, keys.INSPECT_GROUP, batch.entries), what="ack")
        self.inspected += len(batch.frames)
        done = time.time()
        for (msg, _), res in zip(batch.frames, results, strict=True):
            metrics.observe_inspected(msg.station_id, res.flagged, done - msg.captured_at)

    def _inspect(self, frames: list[tuple[FrameMessage, np.ndarray]]) -> list[InspectionResult]:
        started = time.perf_counter()
        by_inspector: dict[int, list[int]] = {}
        for i, (msg, _) in enumerate(frames):
            by_inspector.setdefault(id(self.inspectors[msg.station_id]), []).append(i)
        out: list[InspectionResult | None] = [None] * len(frames)
        for idx in by_inspector.values():
            insp = self.inspectors[frames[idx[0]][0].station_id]
            for i, res in zip(
                idx, insp.inspect([(frames[i][0].station_id, frames[i][1]) for i in idx]), strict=True
            ):
                out[i] = res
        metrics.observe_batch(len(frames), time.perf_counter() - started)
        return [r for r in out if r is not None]

    async def _publish(
        self, frames: list[tuple[FrameMessage, np.ndarray]], results: list[InspectionResult]
    ) -> None:
        now = time.time()
        async with self.r.pipeline(transaction=False) as pipe:
            for (msg, image), res in zip(frames, results, strict=True):
                # regions were found on the decoded frame; they are given in the camera's pixels
                width, height = msg.original_size
                sx, sy = width / image.shape[1], height / image.shape[0]
                out = ResultMessage(
                    station_id=msg.station_id,
                    seq=msg.seq,
                    captured_at=msg.captured_at,
                    inspected_at=now,
                    score=round(res.score, 5),
                    flagged=res.flagged,
                    latency_ms=round((now - msg.captured_at) * 1000, 2),
                    regions=[r.scaled(sx, sy).as_dict() for r in res.regions],
                    heatmap_png=encode_heatmap(res.heatmap),
                    worker=self.name,
                    timings={k: round(v, 3) for k, v in res.timings.items()},
                    frame_jpeg=msg.jpeg if res.flagged else b"",  # evidence and the explainer's image
                    width=width,
                    height=height,
                )
                fields: Any = out.to_fields()
                pipe.xadd(
                    keys.results(msg.station_id), fields, maxlen=self.options.results_maxlen, approximate=True
                )
                if res.flagged:
                    pipe.xadd(
                        keys.flagged(msg.station_id),
                        fields,
                        maxlen=self.options.flagged_maxlen,
                        approximate=True,
                    )
            await pipe.execute()
