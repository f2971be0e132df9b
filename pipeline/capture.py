"""Station capture: reads a FrameSource in a thread and hands paced, JPEG-encoded frames to asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from pipeline.errors import SourceError
from pipeline.messages import FrameMessage
from pipeline.originals import OriginalFrames, downsize
from pipeline.sources import FrameSource

logger = logging.getLogger(__name__)

StateCallback = Callable[[dict[str, Any]], Awaitable[None]]
_FPS_WINDOW_S = 3.0


@dataclass(frozen=True)
class CaptureOptions:
    """Tuning of a capture; the defaults suit a camera on a factory network."""

    jpeg_quality: int = 90
    queue_size: int = 4  # live sources: small, a live frame waiting in a queue is a stale frame
    # recorded sources read this many frames ahead of the consumer: one that was away (waiting for
    # the workers) finds them ready and sends them in a few Redis round trips
    recorded_queue_size: int = 16
    report_interval_s: float = 2.0  # the state is reported at least this often
    stall_timeout_s: float = 10.0  # a read that takes longer counts as a failure
    retry_initial_s: float = 0.5  # reopen backoff: doubles after each failed attempt …
    # … up to this: a camera back after a network blip or a reboot is seen within seconds, and an
    # open attempt is cheap (one connect)
    retry_max_s: float = 5.0
    offline_after_s: float = 30.0  # "reconnecting" becomes "offline" after this long
    stop_timeout_s: float = 5.0  # how long stop() waits for a reader blocked in a driver call
    # recent camera-size frames kept for flagged frames' evidence: 145 frames of 640x480, 21 of
    # 1080p; results normally come back within a fraction of a second
    originals_mb: float = 128.0


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {frame.shape}")
    return data.tobytes()


class _Pacer:
    """Spaces frames ``1/fps`` apart on average, without a burst after a pause."""

    def __init__(self, fps: float) -> None:
        self._period, self._due = 1.0 / fps, 0.0

    def delay(self, now: float) -> float:
        # a quarter period early is fine: a camera at exactly the station rate must not be halved
        return self._due - now - 0.25 * self._period

    def take(self, now: float) -> None:
        late = now - self._due > self._period  # after a pause: restart the schedule, no catch-up burst
        self._due = now + self._period if late else self._due + self._period


@dataclass
class _Status:
    """What the dashboard shows about a station, and its transitions; touched on the loop only."""

    state: Literal["online", "reconnecting", "offline", "finished"] = "offline"
    last_frame_at: float | None = None
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    last_error: str | None = None
    outage_since: float | None = None  # monotonic
    recent: deque[float] = field(default_factory=deque)  # monotonic times of recent frames

    def count_frame(self, captured_at: float) -> None:
        self.frames += 1
        self.last_frame_at = captured_at
        self.recent.append(time.monotonic())

    def fps(self, now: float) -> float:
        while self.recent and now - self.recent[0] > _FPS_WINDOW_S:
            self.recent.popleft()
        span = now - self.recent[0] if self.recent else 0.0
        return round(len(self.recent) / span, 2) if span > 0.2 else 0.0

    def online(self, recovered: bool) -> None:
        self.state, self.outage_since = "online", None
        self.reconnects += recovered

    def failed(self, error: str) -> None:
        self.last_error = error
        if self.outage_since is None and self.state != "finished":
            self.state, self.outage_since = "reconnecting", time.monotonic()

    def finished(self) -> None:
        self.state = "finished"

    def check(self, now: float, read_started: float | None, options: CaptureOptions) -> bool:
        """Apply the stall and offline timeouts; True when the state changed."""
        reading = 0.0 if read_started is None else now - read_started
        if self.state == "online" and reading > options.stall_timeout_s:
            self.failed(f"no frame for {reading:.1f} s (stalled)")
            return True
        outage = self.outage_since
        if self.state == "reconnecting" and outage is not None and now - outage > options.offline_after_s:
            self.state = "offline"
            return True
        return False


class StationCapture:
    """Captures one station's camera: ``async with capture: async for frame in capture.frames()``.

    Built from a station as ``StationCapture(station.id, make_source(camera.source, camera.loop),
    fps=camera.fps, inspection_size=model.image_size)``. Frames go out, area-resized to the
    inspection size and JPEG-encoded once (the originals of resized frames stay in ``originals``
    for a while, for the evidence of flagged ones), through the async iterator
    ``frames()`` (pull: a recorded source waits for a slow consumer), which ends when a
    non-looping recorded source is exhausted or the capture stops. Live sources drop the oldest
    queued frame when the consumer is behind; seq numbers start at ``start_seq`` and leave gaps
    where frames were dropped. State changes (state, last_error, reconnects) are reported at once
    through ``on_state``, counters at least every ``report_interval_s``.
    """

    def __init__(
        self,
        station_id: str,
        source: FrameSource,
        *,
        fps: float,
        start_seq: int = 0,
        on_state: StateCallback | None = None,
        options: CaptureOptions | None = None,
        inspection_size: int | None = None,
    ) -> None:
        self.station_id = station_id
        self.source = source
        self.options = options or CaptureOptions()
        self.inspection_size = inspection_size  # longer side; None sends frames as captured
        self.originals = OriginalFrames(int(self.options.originals_mb * 2**20))
        self._fps = fps
        self._seq = start_seq
        self._on_state = on_state
        size = max(1, self.options.queue_size)  # asyncio reads 0 as unbounded
        self._queue: asyncio.Queue[FrameMessage | None] = asyncio.Queue(size)  # live frames
        # recorded frames: the reader appends (after taking room: recorded never drops) and wakes
        # the loop only when the consumer waits; a busy consumer finds the frames that came
        # meanwhile and sends them together, without a wake-up per frame
        self._recorded: deque[FrameMessage | None] = deque()
        self._room = threading.Semaphore(max(1, self.options.recorded_queue_size))
        self._arrived = asyncio.Event()
        self._waiting = 0  # consumers waiting in frames() for the reader (a count: each resets its own)
        self._status = _Status()
        self._changed = asyncio.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._closed = False
        self._stopping: asyncio.Future[None] | None = None
        self._read_started: float | None = None  # monotonic; set by the reader while in read()

    @property
    def next_seq(self) -> int:
        """The seq the next captured frame gets: pass it as ``start_seq`` when restarting."""
        return self._seq

    @property
    def state(self) -> dict[str, Any]:
        status, now = self._status, time.monotonic()
        return {
            "station": self.station_id,
            "state": status.state,
            "source": self.source.describe(),
            "live": self.source.live,
            "last_frame_at": status.last_frame_at,
            "fps": status.fps(now),
            "frames": status.frames,
            "dropped": status.dropped,
            "corrupt": self.source.corrupt,
            "reconnects": status.reconnects,
            "last_error": status.last_error,
            "updated_at": time.time(),
        }

    async def start(self) -> None:
        """Start reading; raises SourceError when a recorded source cannot be opened.

        A live source is opened by the reader and retried while it fails: a camera may reboot.
        """
        if self._thread is not None:
            raise RuntimeError(f"capture of station {self.station_id} already started")
        if self._stopping is not None:  # stopped before it started: frames() ends at once
            return
        self._loop = asyncio.get_running_loop()
        if not self.source.live:  # a missing or broken file is a configuration error: fail now
            await asyncio.to_thread(self.source.open)
            if self._stopping is not None:  # stopped while opening
                await asyncio.to_thread(self.source.close)
                return
        name = f"capture-{self.station_id}"
        self._thread = threading.Thread(target=self._read_loop, args=(not self.source.live,), name=name)
        self._thread.daemon = True  # an abandoned reader stuck in a driver call must not block exit
        self._thread.start()
        self._reporter = asyncio.create_task(self._report_loop(), name=f"capture-state-{self.station_id}")

    async def stop(self) -> None:
        """Stop reading, close the source, end ``frames()`` and report the final state.

        Safe to call twice at once (the role stops a capture whose consumer may be stopping it
        too); the stop runs to its end even when the caller is cancelled meanwhile.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop_now())
        await asyncio.shield(self._stopping)

    async def _stop_now(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self.options.stop_timeout_s)
            if self._thread.is_alive():  # a driver call cannot be interrupted from Python
                logger.warning("station %s: reader stuck in a read; left behind", self.station_id)
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
        if self._status.state != "finished":
            self._status.state = "offline"
        self._close_queue()
        await self._report()

    async def __aenter__(self) -> StationCapture:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def frames(self) -> AsyncIterator[FrameMessage]:
        """Captured frames in order until the source is exhausted or the capture stops."""
        while True:
            if self.source.live:
                item = await self._queue.get()
                if item is None:
                    self._queue.put_nowait(None)  # so that a second iterator ends too
                    return
            else:
                await self._recorded_arrival()
                if self._recorded[0] is None:  # left in place: a second iterator ends too
                    return
                item = self._take_recorded()
            yield item

    async def _recorded_arrival(self) -> None:
        """Wait until the reader has handed over a recorded frame or the end marker."""
        while not self._recorded:
            self._arrived.clear()
            self._waiting += 1  # before the second look: the reader checks it after appending
            try:
                if not self._recorded:
                    await self._arrived.wait()
            finally:
                self._waiting -= 1

    def _take_recorded(self) -> FrameMessage:
        item = self._recorded.popleft()
        assert item is not None
        self._room.release()  # the reader may read one more frame ahead
        self._status.count_frame(item.captured_at)
        return item

    def ready(self, limit: int) -> list[FrameMessage]:
        """Up to ``limit`` frames already queued, without waiting: a consumer that fell behind takes
        them with the one ``frames()`` gave it and sends them together. The end marker stays queued,
        so ``frames()`` still ends after them."""
        items: list[FrameMessage] = []
        if not self.source.live:
            while len(items) < limit and self._recorded and self._recorded[0] is not None:
                items.append(self._take_recorded())
            return items
        while len(items) < limit and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)  # room: one item just left
                break
            items.append(item)
        return items

    def _offer_latest(self, item: FrameMessage) -> None:
        """Queue a live frame, dropping the oldest queued one when the consumer is behind."""
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._status.dropped += 1
        self._queue.put_nowait(item)
        self._status.count_frame(item.captured_at)

    def _end_live(self) -> None:
        """Put the end marker in the live queue, dropping frames to make room: the consumer is
        told to stop, and frames left over are moot."""
        while self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def _close_queue(self) -> None:
        self._closed = True
        self._recorded.clear()  # frames left over are moot; the end marker goes first
        self._recorded.append(None)
        self._arrived.set()
        self._end_live()

    def _apply(self, change: Callable[..., None], *args: object) -> None:
        """Apply a state change posted by the reader; stop() has the last word over late ones."""
        if not self._stop.is_set():
            change(*args)
            self._changed.set()

    async def _report_loop(self) -> None:
        tick = min(0.25, self.options.report_interval_s)
        last = float("-inf")
        # stop() cancels this task, but it also ends by itself once stopping: Python 3.11's
        # asyncio.wait_for can swallow a cancellation that lands as its timeout fires, and a loop
        # that missed it would keep stop() (and the capture role's shutdown) waiting forever
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._changed.wait()
            if self._status.check(time.monotonic(), self._read_started, self.options):
                self._changed.set()
            if self._changed.is_set() or time.monotonic() - last >= self.options.report_interval_s:
                self._changed.clear()
                last = time.monotonic()
                await self._report()
            if self._status.state == "finished":
                return

    async def _report(self) -> None:
        try:
            if self._on_state is not None:
                await self._on_state(self.state)
        except Exception:  # a failing dashboard write must not stop the capture
            logger.exception("station %s: state callback failed", self.station_id)

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is left to read for
            self._stop.set()

    def _read_loop(self, is_open: bool) -> None:
        """The reader thread: read, pace and deliver; reopen with capped exponential backoff."""
        retry, pacer = self.options.retry_initial_s, _Pacer(self._fps)
        healthy = is_open or self._reopen()
        online = recovering = False  # recovering: the next frame is a reconnection
        while not self._stop.is_set():
            if not healthy:
                if self._stop.wait(retry):
                    break
                retry = min(retry * 2, self.options.retry_max_s)
                healthy = self._reopen()
                continue
            try:
                frame = self._read_one()
                if frame is None:
                    logger.info("station %s: %s finished", self.station_id, self.source.describe())
                    self._post(self._apply, self._status.finished)
                    self._deliver(None)
                    break
                if not online:
                    if recovering:
                        logger.info("station %s: %s is back", self.station_id, self.source.describe())
                    self._post(self._apply, self._status.online, recovering)
                    online, recovering = True, False
                retry = self.options.retry_initial_s
                self._emit(frame, pacer)
            except Exception as e:  # loop boundary: a driver or encoder error is a failed read
                self._fail(e)
                healthy, online, recovering = False, False, True
        with contextlib.suppress(Exception):
            self.source.close()

    def _read_one(self) -> np.ndarray | None:
        """The next frame, None at the end of a recorded source; raises SourceError on failure."""
        started = self._read_started = time.monotonic()
        try:
            frame = self.source.read()
        finally:
            self._read_started = None
        elapsed = time.monotonic() - started
        if elapsed > self.options.stall_timeout_s:
            raise SourceError(f"no frame for {elapsed:.1f} s (stalled)")
        if frame is None and self.source.live:
            raise SourceError("the camera returned no frame")
        return frame

    def _reopen(self) -> bool:
        try:
            self.source.open()
        except Exception as e:  # SourceError or a driver error: retried either way
            self._fail(e)
            return False
        return True

    def _fail(self, error: Exception) -> None:
        if isinstance(error, SourceError):
            message = str(error)
            logger.warning("station %s: %s", self.station_id, message)
        else:
            message = f"{type(error).__name__}: {error}"
            logger.exception("station %s: %s failed", self.station_id, self.source.describe())
        with contextlib.suppress(Exception):
            self.source.close()
        self._post(self._apply, self._status.failed, message)

    def _emit(self, frame: np.ndarray, pacer: _Pacer) -> None:
        wait = pacer.delay(time.monotonic())
        # live: skip, the camera runs faster than the station rate; recorded: wait (or stop)
        if wait > 0 and (self.source.live or self._stop.wait(wait)):
            return
        pacer.take(time.monotonic())
        self._deliver(self._encode(frame, time.time(), self.source.jpeg))

    def _encode(self, frame: np.ndarray, captured_at: float, camera_jpeg: bytes | None) -> FrameMessage:
        # at most one encode, at the inspection size: a quarter of the pixels to encode, send and
        # decode for a frame twice that size; the original (the camera's JPEG where it sent one)
        # waits here in case a worker flags the frame. A frame no larger goes out as it came.
        height, width = frame.shape[:2]
        small = downsize(frame, self.inspection_size) if self.inspection_size else frame
        if small is frame and camera_jpeg is not None:
            jpeg = camera_jpeg
        else:
            jpeg = encode_jpeg(small, self.options.jpeg_quality)
        if small is not frame:
            self.originals.put(self._seq, frame if camera_jpeg is None else camera_jpeg)
        h, w = small.shape[:2]
        message = FrameMessage(self.station_id, self._seq, captured_at, jpeg, w, h, width, height)
        self._seq += 1
        return message

    def _deliver(self, item: FrameMessage | None) -> None:
        """Hand a frame (None: the end) to the consumer. Live frames go through the loop at once.
        A recorded frame first waits for room (recorded never drops), then joins ``_recorded``;
        the loop is woken only when the consumer waits for it."""
        if self.source.live:
            if item is None:
                self._post(self._end_live)
            else:
                self._post(self._offer_latest, item)
            return
        if item is not None:
            while not self._room.acquire(timeout=0.1):  # wait for room, responsive to stop()
                if self._stop.is_set():
                    return
        self._recorded.append(item)
        if self._waiting:  # checked after appending: see _recorded_arrival
            self._post(self._arrived.set)
