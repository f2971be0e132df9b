"""``linewatch worker``: reads frame batches across stations from Redis, inspects them, writes results."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from pipeline import keys, metrics, problems, streams
from pipeline.evidence import encode_heatmap
from pipeline.messages import FrameMessage, MessageError, ResultMessage
from workers.frames import decode_frame
from workers.inspector import InspectionResult, Inspector

logger = logging.getLogger(__name__)

UNDECODABLE = "JPEG payload does not decode"


class WorkerHung(RuntimeError):
    """A batch stayed in the model longer than ``hang_timeout_s``: a hung device or library call.

    The call cannot be interrupted from Python, so the process must end (``linewatch worker``
    exits at once, and the supervisor starts a fresh one); the batch's frames stay pending and
    another worker takes them over after ``claim_idle_ms``.
    """


@dataclass(frozen=True)
class WorkerOptions:
    batch_size: int = 16  # frames per inspector call, across stations, when the streams keep up
    # the batch doubles up to this while reads come back full (a backlog); None: 4x batch_size when
    # an inspector is on a GPU, batch_size on a CPU (there bigger batches gain nothing, and each
    # batch's activations stay reserved by the allocator, workers/memory_tuning.py)
    max_batch_size: int | None = None
    max_wait_ms: int = 30  # how long a partial batch waits for more frames (latency bound)
    claim_idle_ms: int = 15_000  # pending this long on a silent consumer -> taken over
    max_deliveries: int = 5  # then the frame goes to the dead-letter stream
    results_maxlen: int = 100_000  # results are consumed by the recorder; bound memory anyway
    flagged_maxlen: int = 2_000  # flagged results carry the frame: the explainer's backlog bound
    heartbeat_ttl_s: float = 10.0
    hang_timeout_s: float = 300.0  # a batch in the model this long means a hung device: exit
    device_decode: bool | None = None  # decode JPEGs on the inspector's device; None: on a GPU


@dataclass
class _Batch:
    """Frames being inspected: decoded frames, their stream entries, the running inspection."""

    frames: list[tuple[FrameMessage, np.ndarray | None]]  # None: decoded on the device
    entries: list[streams.Entry]
    results: asyncio.Task[list[InspectionResult | None]]  # None: did not decode


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
        self.batch_size = self.options.batch_size  # adapts to the backlog, see _adapt
        on_gpu = any(i.device.type == "cuda" for i in inspectors.values())
        most = self.options.max_batch_size
        self.max_batch_size = most if most is not None else self.batch_size * (4 if on_gpu else 1)

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
        size = self.batch_size
        # only taken-over frames can have been delivered before; fresh reads need no XPENDING check
        entries = await self._drop_exhausted(await self._claim_stale())
        if len(entries) < size:
            entries += await streams.read_batch(
                self.r, keys.INSPECT_GROUP, self.name, self.frame_streams, size - len(entries), 1000
            )
        full_at_once = len(entries) >= size
        deadline = time.monotonic() + opts.max_wait_ms / 1000
        while entries and len(entries) < size and time.monotonic() < deadline:
            more = await self._top_up(size - len(entries))
            if not more:
                await asyncio.sleep(0.003)
            entries += more
        self._adapt(full_at_once, len(entries))
        return entries

    def _adapt(self, full_at_once: bool, got: int) -> None:
        """A read that came back full means a backlog: double the batch (up to max_batch_size) for
        throughput; a batch that filled less than half: halve it (down to batch_size) for latency."""
        opts = self.options
        if full_at_once:
            self.batch_size = min(self.max_batch_size, self.batch_size * 2)
        elif got < self.batch_size // 2:
            self.batch_size = max(opts.batch_size, self.batch_size // 2)

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
                inspector = self.inspectors[msg.station_id]
                image = None
                if not self._decodes_on_device(inspector):
                    size = inspector.stations[msg.station_id].image_size
                    image = decode_frame(msg.jpeg, msg.width, msg.height, size)
                    if image is None:
                        raise MessageError(UNDECODABLE)
            except MessageError as e:
                await streams.bury(self.r, keys.INSPECT_GROUP, entry, str(e))
                self.dead += 1
                continue
            frames.append((msg, image))
            valid.append(entry)
        if not frames:
            return None
        return _Batch(frames, valid, asyncio.create_task(asyncio.to_thread(self._inspect, frames)))

    async def _finish(self, batch: _Batch) -> None:
        try:
            # shielded: on a timeout the thread cannot be stopped anyway, and the task must not be
            # cancelled under it
            results = await asyncio.wait_for(asyncio.shield(batch.results), self.options.hang_timeout_s)
        except TimeoutError:
            message = (
                f"worker {self.name}: a batch of {len(batch.entries)} frames has been in the model for "
                f"{self.options.hang_timeout_s:g} s (hang_timeout_s): the device or model is stuck"
            )
            try:  # best effort: with Redis away too, exiting matters more than reporting
                await asyncio.wait_for(problems.report(self.r, f"hung:{self.name}", message), 5.0)
            except Exception as e:  # any failure to report must not stop the exit
                logger.warning("worker %s: could not report the hang: %s", self.name, e)
            raise WorkerHung(message) from None
        rows = list(zip(batch.entries, batch.frames, results, strict=True))
        done = [(e, f, r) for e, f, r in rows if r is not None]
        for entry, _, _ in [row for row in rows if row[2] is None]:
            # found by the device decoder: put aside as the host decoder's finds are
            await streams.bury(self.r, keys.INSPECT_GROUP, entry, UNDECODABLE)
            self.dead += 1
        frames = [(f[0], f[1], r) for _, f, r in done]
        await streams.reconnecting(lambda: self._publish(frames), what="results")
        acked = [e for e, _, _ in done]
        await streams.reconnecting(lambda: streams.ack(self.r, keys.INSPECT_GROUP, acked), what="ack")
        self.inspected += len(frames)
        now = time.time()
        for msg, _, res in frames:
            metrics.observe_inspected(msg.station_id, res.flagged, now - msg.captured_at)

    def _decodes_on_device(self, inspector: Inspector) -> bool:
        """JPEGs go to a GPU inspector as bytes (nvJPEG there); CPU workers decode with OpenCV."""
        choice = self.options.device_decode
        return inspector.device.type == "cuda" if choice is None else choice

    def _inspect(self, frames: list[tuple[FrameMessage, np.ndarray | None]]) -> list[InspectionResult | None]:
        started = time.perf_counter()
        by_inspector: dict[int, list[int]] = {}
        for i, (msg, _) in enumerate(frames):
            by_inspector.setdefault(id(self.inspectors[msg.station_id]), []).append(i)
        out: list[InspectionResult | None] = [None] * len(frames)
        for idx in by_inspector.values():
            insp = self.inspectors[frames[idx[0]][0].station_id]
            got: list[InspectionResult | None]
            if self._decodes_on_device(insp):
                got = insp.inspect_jpegs([(frames[i][0].station_id, frames[i][0].jpeg) for i in idx])
            else:
                got = [*insp.inspect([(frames[i][0].station_id, _host_decoded(frames[i][1])) for i in idx])]
            for i, res in zip(idx, got, strict=True):
                out[i] = res
        metrics.observe_batch(len(frames), time.perf_counter() - started)
        return out

    async def _publish(self, frames: list[tuple[FrameMessage, np.ndarray | None, InspectionResult]]) -> None:
        now = time.time()
        async with self.r.pipeline(transaction=False) as pipe:
            for msg, image, res in frames:
                # regions were found on the decoded frame (the JPEG's size, or a reduced decode of
                # it); they are given in the camera's pixels
                width, height = msg.original_size
                h, w = image.shape[:2] if image is not None else (msg.height, msg.width)
                sx, sy = width / w, height / h
                out = ResultMessage(
                    station_id=msg.station_id,
                    seq=msg.seq,
                    captured_at=msg.captured_at,
                    inspected_at=now,
                    score=round(res.score, 5),
                    flagged=res.flagged,
                    latency_ms=round((now - msg.captured_at) * 1000, 2),
                    regions=[r.scaled(sx, sy, (height, width)).as_dict() for r in res.regions],
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


def _host_decoded(image: np.ndarray | None) -> np.ndarray:
    if image is None:  # _start decodes every frame of a host-decoding inspector
        raise RuntimeError("a frame for host inspection was not decoded")
    return image
