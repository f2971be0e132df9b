"""``linewatch capture``: every station's camera into its Redis frame stream, with state for the dashboard."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from config.station import StationConfig
from pipeline import keys, metrics, streams
from pipeline.cancelling import cancel_and_wait
from pipeline.capture import StationCapture
from pipeline.errors import PipelineError
from pipeline.evidence_sender import EvidenceSender
from pipeline.messages import FrameMessage
from pipeline.sources import make_source

logger = logging.getLogger(__name__)

# a stopped station ends within its capture's reader join (5 s) and one evidence read (1 s);
# past this, whatever still runs (retrying an absent Redis) is cancelled, inside the supervisor's 10 s
STOP_GRACE_S = 8.0


@dataclass(frozen=True)
class CaptureRoleOptions:
    live_maxlen: int = 500  # live frames: the stream keeps about this many; older ones drop
    # recorded sources pause while this many frames wait for workers: enough to keep them busy, few
    # enough that the originals of flagged frames are still in capture's buffer when flags come
    recorded_backlog: int = 48
    trim_every: int = 50  # frames between trims of entries every worker has acknowledged
    publish_batch: int = 8  # at most this many queued frames go to Redis in one round trip
    state_ttl_s: int = 30  # a station whose capture died shows as offline after this


async def start_seq(r: streams.Redis, station_id: str) -> int:
    """Continue numbering after a restart: last published seq + 1, else a clock-based start.

    The clock fallback (ms since 1970) keeps frame ids unique even when Redis lost the counter,
    so a restarted deployment never reuses ``station:seq`` keys already in the store.
    """
    last = await r.get(keys.last_seq(station_id))
    if last is not None:
        return int(last) + 1
    return int(time.time() * 1000)


class StationPublisher:
    """Feeds one station's captured frames and state into Redis."""

    def __init__(
        self, r: streams.Redis, station: StationConfig, options: CaptureRoleOptions, stopping: asyncio.Event
    ) -> None:
        self.r = r
        self.station = station
        self.options = options
        self.frames = keys.frames(station.id)
        self.counters = metrics.CaptureCounters(station.id)
        self.stopping = stopping  # the role's: set once, every station stops
        self._capture: StationCapture | None = None

    async def stop(self) -> None:
        """Stop publishing: the capture ends its frames and reports its final state, and ``run``
        returns once the evidence sender's current read is over (a second or so)."""
        self.stopping.set()
        if self._capture is not None:
            await self._capture.stop()

    async def publish_state(self, state: dict[str, Any]) -> None:
        self.counters.update(state)  # the metrics count what `linewatch status` shows
        mapping: Any = {k: json.dumps(v) for k, v in state.items()}
        key = keys.station_state(self.station.id)

        async def write() -> None:
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=mapping)
                pipe.expire(key, self.options.state_ttl_s)
                await pipe.execute()

        await streams.reconnecting(write, what=key)

    async def publish_frames(self, msgs: list[FrameMessage], live: bool) -> None:
        """The frames, in order, and the last one's seq, in one round trip."""

        async def write() -> None:
            async with self.r.pipeline(transaction=False) as pipe:
                for msg in msgs:
                    fields: Any = msg.to_fields()
                    pipe.xadd(
                        self.frames,
                        fields,
                        maxlen=self.options.live_maxlen if live else None,
                        approximate=True,
                    )
                pipe.set(keys.last_seq(msgs[-1].station_id), msgs[-1].seq)
                await pipe.execute()

        await streams.reconnecting(write, what=self.frames)

    async def wait_for_workers(self) -> None:
        """Recorded sources never drop: hold back while the workers have a backlog."""
        while True:
            try:
                backlog = await streams.reconnecting(
                    lambda: streams.lag(self.r, self.frames, keys.INSPECT_GROUP), what=self.frames
                )
            except LookupError:  # no group yet: workers have not started
                backlog = await self.r.xlen(self.frames)
            if backlog < self.options.recorded_backlog:
                return
            await asyncio.sleep(0.2)

    async def run(self) -> None:
        source = make_source(self.station.camera.source, self.station.camera.loop)
        await streams.reconnecting(
            lambda: streams.ensure_group(self.r, self.frames, keys.INSPECT_GROUP), what=self.frames
        )
        seq = await streams.reconnecting(lambda: start_seq(self.r, self.station.id), what="seq")
        capture = StationCapture(
            self.station.id,
            source,
            fps=self.station.camera.fps,
            start_seq=seq,
            on_state=self.publish_state,
            inspection_size=self.station.model.image_size,
        )
        sender = EvidenceSender(
            self.r,
            self.station.id,
            capture.originals,
            self.station.model.image_size,
            capture.options.jpeg_quality,
        )
        flagged = keys.flagged(self.station.id)
        await streams.reconnecting(sender.start, what=flagged)
        if self.station.explainer.enabled:
            # capture trims the flagged stream by what its groups have read: an explainer started
            # later (another host, a later deploy) finds its group here and the frames since
            await streams.reconnecting(
                lambda: streams.ensure_group(self.r, flagged, keys.EXPLAIN_GROUP, start="$"), what=flagged
            )
        # flags of the last frames arrive after a recorded source ends: the sender outlives it
        evidence = asyncio.create_task(sender.run(self.stopping), name=f"evidence-{self.station.id}")
        self._capture = capture
        if self.stopping.is_set():  # stopped while this was starting, before stop() saw a capture
            await capture.stop()
        logger.info(
            "station %s: capturing %s from seq %d",
            self.station.id,
            source.describe(),
            seq,
            extra={"station": self.station.id},
        )
        try:
            count = await self.publish_all(capture)
            if not self.stopping.is_set():
                logger.info("station %s: source finished after %d frames", self.station.id, count)
            await evidence  # until the role stops
        finally:
            await cancel_and_wait([evidence])  # done already, unless this task was cancelled

    async def publish_all(self, capture: StationCapture) -> int:
        """Every frame of the capture into the stream; returns how many once the source ends."""
        live = capture.source.live
        count = checked = trimmed = 0
        async with capture:
            async for frame in capture.frames():
                if not live and (count == 0 or count - checked >= 10):
                    checked = count
                    await self.wait_for_workers()
                # frames that queued up while the last write was out go in one round trip: when
                # capture falls behind, its per-frame cost falls instead of its lag growing
                batch = [frame, *capture.ready(self.options.publish_batch - 1)]
                await self.publish_frames(batch, live)
                count += len(batch)
                if count - trimmed >= self.options.trim_every:
                    trimmed = count
                    await streams.reconnecting(
                        lambda: streams.trim_acknowledged(self.r, self.frames),
                        what=self.frames,
                    )
        return count


async def run_capture(redis_url: str, stations: list[StationConfig], stop: asyncio.Event) -> None:
    r = streams.connect(redis_url, name="capture")
    await streams.reconnecting(
        lambda: r.sadd(keys.stations_set(), *[s.id for s in stations]), what="stations"
    )
    stopping = asyncio.Event()
    publishers = [StationPublisher(r, s, CaptureRoleOptions(), stopping) for s in stations]
    tasks: dict[asyncio.Task[Any], str] = {asyncio.create_task(p.run()): p.station.id for p in publishers}
    stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
    running: set[asyncio.Task[Any]] = set(tasks)
    try:
        # finished recorded sources leave the role idle, not exited (no restart loop); a station
        # whose publishing failed (an error no reconnect cures: MISCONF, OOM, a bug) ends the role
        # with an error, so the supervisor restarts it and reports the restart; it used to sit
        # idle with that station dead, and only the first failure was ever logged
        while running and not stop.is_set():
            done, running = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
            running.discard(stopper)
            failed = {t: tasks[t] for t in done if t in tasks and not t.cancelled() and t.exception()}
            for t, station_id in failed.items():
                logger.error("station %s: capture failed: %r", station_id, t.exception())
            if failed:
                raise CaptureRoleError(f"capture failed for station(s) {', '.join(failed.values())}")
        await stop.wait()
    finally:
        stopper.cancel()
        # the stations stop themselves: each capture ends its frames and reports its final state.
        # Cancelling alone is not reliable (see pipeline.cancelling: it hung the role in CI) and
        # cut those reports short; it is left for what is still running after the grace
        stops = [asyncio.create_task(p.stop()) for p in publishers]
        waiting = [*stops, *tasks]
        late = (await asyncio.wait(waiting, timeout=STOP_GRACE_S))[1] if waiting else set()
        if late:
            logger.warning("capture: %d task(s) still running %.0f s after the stop", len(late), STOP_GRACE_S)
        await cancel_and_wait([*stops, *tasks])
        await r.aclose()


class CaptureRoleError(PipelineError):
    """A station's capture failed in a way its own retries do not cover."""
