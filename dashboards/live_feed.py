"""What the live view shows of one station: inspected frames with their overlay, and events.

A ``StationFeed`` follows the station's frame and result streams with plain ``XREAD`` (it is not a
consumer: it never takes frames away from workers or results from the recorder). It keeps the
last few frames by seq, and when a frame's result arrives it renders that very frame with the
heat map, region boxes and position words, the score and OK/NG. Viewers get the rendered image
(through the shared encoder) and JSON events: inspection summaries at most ``summary_hz`` times a
second, flagged defects at once, capture state changes. The feed runs only while someone watches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from pipeline import keys
from pipeline.cancelling import cancel_and_wait
from pipeline.evidence import decode_heatmap, overlay
from pipeline.messages import FrameMessage, MessageError, ResultMessage
from pipeline.streams import TRANSIENT_ERRORS, Redis
from workers.frames import decode_frame

logger = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], None]
_RECENT_FRAMES = 128  # frames waiting for their result; a result comes well within this many


class StationFeed:
    """Latest rendered overlay image and a stream of events for one station."""

    def __init__(self, redis: Redis, station_id: str, height: int, summary_hz: float = 10.0) -> None:
        self.r = redis
        self.station_id = station_id
        self.height = height  # frames are decoded no larger than needed for this output height
        self.min_gap_s = 1.0 / summary_hz
        self.latest: np.ndarray | None = None  # BGR, the last inspected frame with its overlay
        self.rendered = 0
        self.listeners: set[Listener] = set()
        self._frames: OrderedDict[int, FrameMessage] = OrderedDict()
        self._last_summary = 0.0
        self._state: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"live-feed-{self.station_id}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])  # it reads Redis: one cancel may be lost
            self._task = None

    def emit(self, event: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # a viewer that went away must not stop the others
                logger.debug("live listener failed", exc_info=True)
                self.listeners.discard(listener)

    # ----------------------------------------------------------- reading
    async def _run(self) -> None:
        frames, results = keys.frames(self.station_id), keys.results(self.station_id)
        cursor: dict[str, str] = {frames: "$", results: "$"}
        next_state = 0.0
        while True:
            try:
                if time.monotonic() >= next_state:
                    next_state = time.monotonic() + 1.0
                    await self._poll_state()
                reply: Any = await self.r.xread(cursor, count=64, block=500)  # type: ignore[arg-type]
            except TRANSIENT_ERRORS as e:
                logger.warning("live view of %s: Redis unavailable (%s); retrying", self.station_id, e)
                await asyncio.sleep(1.0)
                continue
            for stream, entries in reply or []:
                name = stream.decode()
                for entry_id, fields in entries:
                    cursor[name] = entry_id.decode()
                    if name == frames:
                        self._keep_frame(fields)
                    else:
                        await self._on_result(fields)

    def _keep_frame(self, fields: dict[bytes, bytes]) -> None:
        try:
            msg = FrameMessage.from_fields(fields)
        except MessageError:
            return  # the worker dead-letters it; the live view just skips it
        self._frames[msg.seq] = msg
        while len(self._frames) > _RECENT_FRAMES:
            self._frames.popitem(last=False)

    async def _on_result(self, fields: dict[bytes, bytes]) -> None:
        try:
            res = ResultMessage.from_fields(fields)
        except MessageError:
            return
        frame = self._frames.pop(res.seq, None)
        jpeg = frame.jpeg if frame else res.frame_jpeg
        if jpeg:
            image = await asyncio.to_thread(self.render, res, jpeg)
            if image is not None:
                self.latest = image
                self.rendered += 1
        now = time.monotonic()
        if res.flagged:
            self.emit({"type": "defect", **summary(res), "regions": res.regions})
        elif now - self._last_summary >= self.min_gap_s:
            self._last_summary = now
            self.emit({"type": "inspection", **summary(res)})

    async def _poll_state(self) -> None:
        raw: Any = await self.r.hgetall(keys.station_state(self.station_id))
        state = {k.decode(): json.loads(v) for k, v in raw.items()}
        keep = {k: state.get(k) for k in ("state", "fps", "dropped", "last_error", "reconnects")}
        if keep != self._state:
            self._state = keep
            self.emit(self.state_event())

    def state_event(self) -> dict[str, Any]:
        """The capture state last seen (what a viewer that just joined is told first)."""
        return {"type": "state", "station": self.station_id, **self._state}

    # ----------------------------------------------------------- drawing
    def render(self, res: ResultMessage, jpeg: bytes) -> np.ndarray | None:
        """The frame of ``res`` with heat map, boxes, position words, score and OK/NG drawn on it."""
        image = decode_frame(jpeg, 0, 0, self.height)  # the inspected frame: no larger than needed
        if image is None:
            return None
        out = overlay(image, decode_heatmap(res.heatmap_png), res.regions, (res.width, res.height))
        label = f"{res.station_id} #{res.seq}  score {res.score:.2f}  {'NG' if res.flagged else 'OK'}"
        colour = (0, 0, 255) if res.flagged else (80, 200, 80)
        bar = max(18, image.shape[0] // 18)
        cv2.rectangle(out, (0, 0), (out.shape[1], bar), (20, 20, 20), -1)
        cv2.putText(
            out, label, (6, int(bar * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, bar / 30, colour, 1, cv2.LINE_AA
        )
        return out


def summary(res: ResultMessage) -> dict[str, Any]:
    return {
        "station": res.station_id,
        "seq": res.seq,
        "score": res.score,
        "flagged": res.flagged,
        "captured_at": res.captured_at,
        "latency_ms": res.latency_ms,
        "position": ", ".join(str(r.get("position", "")) for r in res.regions),
    }
