"""Capture's side of the evidence: the originals of flagged frames, JPEG-encoded once they are flagged
(an MJPEG camera's frames are sent as the camera encoded them)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import ResponseError

from pipeline import keys, streams
from pipeline.capture import encode_jpeg
from pipeline.messages import FrameMessage, MessageError, ResultMessage
from pipeline.originals import OriginalFrames

logger = logging.getLogger(__name__)

#: originals waiting for the recorder; each is a full-size JPEG, so the stream is kept short
EVIDENCE_MAXLEN = 500
TRIM_EVERY_S = 10.0


class EvidenceSender:
    """Reads a station's flagged results (group ``evidence``) and sends the original of each frame
    that capture still holds to ``evidence:{station}``; a frame that has left the buffer is counted
    under ``evidence_missed`` and keeps its inspection-size evidence."""

    def __init__(
        self,
        r: streams.Redis,
        station_id: str,
        originals: OriginalFrames,
        inspection_size: int,
        jpeg_quality: int,
    ) -> None:
        self.r = r
        self.station_id = station_id
        self.inspection_size = inspection_size
        self.originals = originals
        self.jpeg_quality = jpeg_quality
        self.flagged = keys.flagged(station_id)
        self.consumer = f"capture-{station_id}"
        self.sent = 0
        self.missed = 0

    async def start(self) -> None:
        """Start at the newest flag: originals of earlier ones died with the previous capture, and
        its unacknowledged reads go with the old group."""
        try:
            await self.r.xgroup_create(self.flagged, keys.EVIDENCE_GROUP, id="$", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.xgroup_destroy(self.flagged, keys.EVIDENCE_GROUP)
                pipe.xgroup_create(self.flagged, keys.EVIDENCE_GROUP, id="$")
                await pipe.execute()

    async def run(self, stop: asyncio.Event) -> None:
        """Send originals until ``stop`` is set (within one read's block, a second) or the task is
        cancelled; ``start`` must have run."""
        last_trim = time.monotonic()
        while not stop.is_set():
            entries = await streams.reconnecting(
                lambda: streams.read_batch(
                    self.r, keys.EVIDENCE_GROUP, self.consumer, [self.flagged], 16, 1000
                ),
                what=self.flagged,
            )
            if entries:
                await self.send(entries)
            if time.monotonic() - last_trim >= TRIM_EVERY_S:
                # flagged results carry their frame: once every group (this one, the explainer's)
                # has them, they are only memory
                last_trim = time.monotonic()
                await streams.reconnecting(
                    lambda: streams.trim_acknowledged(self.r, self.flagged), what=self.flagged
                )

    async def send(self, entries: list[streams.Entry]) -> None:
        out: list[Any] = []  # stream entry fields
        missed = 0
        for entry in entries:
            try:
                res = ResultMessage.from_fields(entry.fields)
            except MessageError as e:  # the recorder dead-letters it on the results stream
                logger.warning("%s: unreadable flagged entry %s: %s", self.flagged, entry.id, e)
                continue
            frame = self.originals.get(res.seq)
            if frame is None:
                # never resized (the inspected frame is the original), else gone from the buffer
                missed += max(res.width, res.height) > self.inspection_size
                continue
            if isinstance(frame, bytes):  # the camera's own JPEG: sent as it came
                jpeg, w, h = frame, res.width, res.height
            else:
                jpeg = await asyncio.to_thread(encode_jpeg, frame, self.jpeg_quality)
                h, w = frame.shape[:2]
            out.append(FrameMessage(res.station_id, res.seq, res.captured_at, jpeg, w, h).to_fields())

        stream, counter = (
            keys.evidence(self.station_id),
            streams.counter_field("evidence_missed", self.flagged),
        )

        async def publish() -> None:
            async with self.r.pipeline(transaction=False) as pipe:
                for fields in out:
                    pipe.xadd(stream, fields, maxlen=EVIDENCE_MAXLEN, approximate=True)
                if missed:
                    pipe.hincrby(keys.counters(), counter, missed)
                pipe.xack(self.flagged, keys.EVIDENCE_GROUP, *[e.id for e in entries])
                await pipe.execute()

        await streams.reconnecting(publish, what=keys.evidence(self.station_id))
        self.sent += len(out)
        self.missed += missed
        if missed:
            logger.warning(
                "station %s: %d flagged frames left the originals buffer before their flag came; "
                "their evidence stays at the inspection size",
                self.station_id,
                missed,
                extra={"station": self.station_id},
            )
