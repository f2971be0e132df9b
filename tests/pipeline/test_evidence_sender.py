"""Capture's evidence sender on a real Redis: originals of flagged frames go out once each, an MJPEG
camera's as it sent them, a decoded frame JPEG-encoded; one that left the buffer is counted."""

from __future__ import annotations

import cv2
import numpy as np
from redis.asyncio import Redis

from pipeline import keys, streams
from pipeline.capture import encode_jpeg
from pipeline.evidence_sender import EvidenceSender
from pipeline.messages import FrameMessage
from pipeline.originals import OriginalFrames
from tests.pipeline.redis_fixtures import RedisTarget
from tests.pipeline.store.factories import make_result


def textured(seed: int) -> np.ndarray:
    """A smooth picture (JPEG keeps it to a few grey levels), different for each seed."""
    y, x = np.mgrid[0:120, 0:160]
    gray = 128 + 100 * np.sin(x / (9 + seed) + seed) * np.cos(y / 13)
    return np.repeat(gray[..., None], 3, axis=2).astype(np.uint8)


async def test_originals_go_out_as_the_camera_sent_them_or_encoded_once(
    r: Redis, redis_target: RedisTarget
) -> None:
    station = f"{redis_target.prefix}-ev"
    originals = OriginalFrames(10**7)
    camera_jpeg = encode_jpeg(textured(1), 75)  # what an MJPEG camera sent
    decoded = textured(2)  # what an H.264 camera's decoder gave
    originals.put(1, camera_jpeg)
    originals.put(2, decoded)
    sender = EvidenceSender(r, station, originals, inspection_size=80, jpeg_quality=90)
    await sender.start()
    for seq in (1, 2, 3):  # 3 has left the buffer
        flagged = make_result(station, seq, flagged=True, frame_jpeg=b"small", width=160, height=120)
        await streams.add(r, keys.flagged(station), flagged.to_fields(), maxlen=None)
    entries = await streams.read_batch(
        r, keys.EVIDENCE_GROUP, sender.consumer, [keys.flagged(station)], 16, 1000
    )

    await sender.send(entries)

    sent = [FrameMessage.from_fields(f) for _, f in await r.xrange(keys.evidence(station))]
    assert [(m.seq, m.width, m.height) for m in sent] == [(1, 160, 120), (2, 160, 120)]
    assert sent[0].jpeg == camera_jpeg  # byte for byte: no second generation of JPEG loss
    again = cv2.imdecode(np.frombuffer(sent[1].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert again.shape == decoded.shape and np.abs(again.astype(int) - decoded).mean() < 3
    assert (sender.sent, sender.missed) == (2, 1)
    assert int((await r.xpending(keys.flagged(station), keys.EVIDENCE_GROUP))["pending"]) == 0
