"""One VP8 encoder per station, its packets fanned out to every viewer.

aiortc encodes a track's frames once per peer connection, so N viewers would cost N encodes. A
track that returns ``av.Packet`` instead of frames is only packetized by the sender (aiortc's
``Encoder.pack``), so the station's ``SharedEncoder`` encodes each output frame once and hands the
same packets to every viewer's ``PacketTrack``. A new viewer waits for the next keyframe, which the
encoder produces as soon as someone joins and every ``keyframe_s`` seconds (so a viewer that lost
packets recovers). Frames are only rendered and encoded while at least one viewer is connected.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time

import av
import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dashboards.live_feed import StationFeed

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000  # RTP video clock rate
_QUEUE = 30  # packets a slow viewer may lag behind before it waits for the next keyframe


class PacketTrack(MediaStreamTrack):
    """A viewer's video track: encoded packets of the station's shared encoder."""

    kind = "video"

    def __init__(self, encoder: SharedEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.queue: asyncio.Queue[av.Packet] = asyncio.Queue(_QUEUE)
        self.synced = False  # True from the first keyframe on: before it, packets cannot be decoded

    def offer(self, packet: av.Packet) -> None:
        if not self.synced and not packet.is_keyframe:
            return
        if self.queue.full():  # behind: drop what is queued and resume at the next keyframe
            while not self.queue.empty():
                self.queue.get_nowait()
            self.synced = False
            self.encoder.want_keyframe = True
            if not packet.is_keyframe:
                return
        self.synced = True
        self.queue.put_nowait(packet)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.queue.get()

    def stop(self) -> None:
        super().stop()
        self.encoder.unsubscribe(self)


class SharedEncoder:
    """Renders the station's feed at ``fps`` into ``width`` x ``height`` VP8, once for all viewers."""

    def __init__(
        self,
        feed: StationFeed,
        width: int = 1280,
        height: int = 720,
        fps: float = 15.0,
        bitrate: int = 1_500_000,
        keyframe_s: float = 2.0,
    ) -> None:
        self.feed = feed
        self.width, self.height = width - width % 2, height - height % 2  # yuv420p needs even sides
        self.fps = fps
        self.bitrate = bitrate
        self.keyframe_every = max(1, round(keyframe_s * fps))
        self.viewers: set[PacketTrack] = set()
        self.want_keyframe = True
        self.encoded = 0  # frames encoded: the same number whatever the number of viewers
        self._codec: av.VideoCodecContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._placeholder = self._waiting_image()

    def subscribe(self) -> PacketTrack:
        track = PacketTrack(self)
        self.viewers.add(track)
        self.want_keyframe = True
        if self._task is None or self._task.done():
            self.feed.start()
            self._task = asyncio.create_task(self._run(), name=f"live-encoder-{self.feed.station_id}")
        return track

    def unsubscribe(self, track: PacketTrack) -> None:
        self.viewers.discard(track)
        if not self.viewers and self._task is not None:
            self._task.cancel()
            self._task = None
            asyncio.get_running_loop().create_task(self.feed.stop())

    async def close(self) -> None:
        for track in list(self.viewers):
            track.stop()
        await self.feed.stop()

    async def _run(self) -> None:
        period = 1.0 / self.fps
        n = 0
        next_at = time.monotonic()
        try:
            while self.viewers:
                image = self.feed.latest if self.feed.latest is not None else self._placeholder
                keyframe = self.want_keyframe or n % self.keyframe_every == 0
                self.want_keyframe = False
                packets = await asyncio.to_thread(self._encode, image, n, keyframe)
                for packet in packets:
                    for viewer in list(self.viewers):
                        viewer.offer(packet)
                n += 1
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if time.monotonic() - next_at > 1.0:  # fell far behind (busy machine): no burst
                    next_at = time.monotonic()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("live encoder of %s failed", self.feed.station_id)
            raise

    def _encode(self, image: np.ndarray, n: int, keyframe: bool) -> list[av.Packet]:
        frame = av.VideoFrame.from_ndarray(letterbox(image, self.width, self.height), format="bgr24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = round(n * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        packets = list(self._context().encode(frame))
        self.encoded += 1
        return packets

    def _context(self) -> av.VideoCodecContext:
        if self._codec is None:
            codec = av.CodecContext.create("libvpx", "w")
            codec.width, codec.height = self.width, self.height
            codec.pix_fmt = "yuv420p"
            codec.bit_rate = self.bitrate
            codec.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            codec.gop_size = 10 * self.keyframe_every  # keyframes come when asked for
            codec.options = {
                "deadline": "realtime",
                "cpu-used": "8",  # fastest realtime preset: the dashboard shares the machine
                "lag-in-frames": "0",  # no look-ahead: a packet per frame, at once
                "error-resilient": "1",
            }
            self._codec = codec
        return self._codec

    def _waiting_image(self) -> np.ndarray:
        image = np.full((self.height, self.width, 3), 30, np.uint8)
        text = f"{self.feed.station_id}: waiting for inspected frames"
        cv2.putText(
            image,
            text,
            (20, self.height // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            1.0,
            (200, 200, 200),
            2,
            cv2.LINE_AA,
        )
        return image


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` scaled to fit ``width`` x ``height`` with its aspect kept, on a dark background."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.full((height, width, 3), 20, np.uint8)
    y, x = (height - nh) // 2, (width - nw) // 2
    out[y : y + nh, x : x + nw] = resized
    return out
