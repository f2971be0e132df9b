"""Camera capture: sources, ordering, drops, pacing, resizing, reconnects and start-up errors."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline import sources as sources_module
from pipeline.capture import CaptureOptions, StationCapture
from pipeline.errors import SourceError
from pipeline.messages import FrameMessage
from pipeline.originals import OriginalFrames, inspection_size
from pipeline.sources import FrameSource, ImageSequenceSource, StreamSource, make_source

STEP = 20  # gray level between consecutive test frames: survives JPEG compression
FAST = CaptureOptions(report_interval_s=0.1, retry_initial_s=0.05, retry_max_s=0.2)


def gray_frame(index: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.full((*size, 3), index * STEP, np.uint8)


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def marker(jpeg: bytes) -> int:
    """The index a gray test frame was made with."""
    return round(float(decode(jpeg).mean()) / STEP)


def write_video(path: Path, count: int, size: tuple[int, int] = (48, 64)) -> Path:
    # MJPG in AVI needs no codec beyond OpenCV's own FFmpeg build
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (size[1], size[0]))
    assert writer.isOpened()
    for index in range(count):
        writer.write(gray_frame(index, size))
    writer.release()
    return path


def write_images(folder: Path, count: int, suffix: str = ".png") -> Path:
    folder.mkdir(exist_ok=True)
    for index in range(count):
        assert cv2.imwrite(str(folder / f"frame_{index:03d}{suffix}"), gray_frame(index))
    return folder


class States:
    """An on_state callback that keeps every report and can wait for one."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    async def __call__(self, state: dict[str, Any]) -> None:
        self.reports.append(state)

    @property
    def names(self) -> list[str]:
        names: list[str] = []
        for report in self.reports:
            if not names or names[-1] != report["state"]:
                names.append(report["state"])
        return names

    async def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float = 3.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for report in self.reports:
                if check(report):
                    return report
            await asyncio.sleep(0.01)
        raise AssertionError(f"no such state within {timeout} s; got {self.names}")


class FakeCamera(FrameSource):
    """A live source that makes frames fast; the test can unplug it or make one read hang."""

    def __init__(self, interval: float = 0.002) -> None:
        super().__init__()
        self.interval = interval
        self.unplugged = False
        self.hang_once = 0.0  # seconds the next read blocks
        self.hanging = False
        self.open_times: list[float] = []

    @property
    def live(self) -> bool:
        return True

    def open(self) -> None:
        self.open_times.append(time.monotonic())
        if self.unplugged:
            raise SourceError("fake camera unplugged")

    def read(self) -> np.ndarray | None:
        if self.hang_once:
            self.hanging, seconds, self.hang_once = True, self.hang_once, 0.0
            time.sleep(seconds)
            self.hanging = False
        time.sleep(self.interval)
        return None if self.unplugged else gray_frame(1)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "fake camera"


async def collect(
    capture: StationCapture, delay: float = 0.0, limit: int | None = None
) -> list[FrameMessage]:
    frames: list[FrameMessage] = []
    async for frame in capture.frames():
        frames.append(frame)
        if limit is not None and len(frames) >= limit:
            break
        await asyncio.sleep(delay)
    return frames


async def collect_for(capture: StationCapture, seconds: float) -> list[FrameMessage]:
    frames: list[FrameMessage] = []

    async def drain() -> None:
        async for frame in capture.frames():
            frames.append(frame)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(drain(), seconds)
    return frames


@pytest.mark.parametrize("kind", ["folder", "glob", "video"])
async def test_recorded_sources_deliver_every_frame_in_order_to_a_slow_consumer(
    tmp_path: Path, kind: str
) -> None:
    count = 10
    if kind == "video":
        source = str(write_video(tmp_path / "clip.avi", count))
    else:
        folder = write_images(tmp_path / "frames", count)
        source = str(folder if kind == "folder" else folder / "frame_*.png")
    states = States()
    options = CaptureOptions(recorded_queue_size=2, report_interval_s=0.1)  # the reader waits for room
    capture = StationCapture(
        "line-1", make_source(source), fps=120, start_seq=100, on_state=states, options=options
    )
    async with capture:
        frames = await collect(capture, delay=0.03)  # far slower than the source
    assert [marker(frame.jpeg) for frame in frames] == list(range(count))
    assert [frame.seq for frame in frames] == list(range(100, 100 + count))
    assert all(frame.id == f"line-1:{frame.seq}" for frame in frames)
    final = states.reports[-1]
    assert (final["state"], final["frames"], final["dropped"]) == ("finished", count, 0)
    assert capture.next_seq == 100 + count


async def test_a_consumer_behind_takes_the_queued_frames_at_once_and_loses_none(tmp_path: Path) -> None:
    count = 11
    source = make_source(str(write_images(tmp_path / "frames", count)))
    capture = StationCapture("s", source, fps=120, options=CaptureOptions(recorded_queue_size=4))
    batches: list[list[FrameMessage]] = []
    async with capture:
        async for frame in capture.frames():
            await asyncio.sleep(0.1)  # behind: the reader fills the queue meanwhile
            batches.append([frame, *capture.ready(3)])
    assert [marker(f.jpeg) for batch in batches for f in batch] == list(range(count))
    assert max(len(batch) for batch in batches) == 4  # the one waited for and 3 more, never above
    assert len(batches) < count  # queued frames did travel together
    assert capture.ready(3) == []  # the end marker stayed queued and ended frames()


async def test_frames_are_sent_at_the_inspection_size_and_originals_kept(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 3, size=(120, 160))
    source = make_source(str(video))
    async with StationCapture("s", source, fps=120, inspection_size=80) as capture:
        frames = await collect(capture)
    assert [decode(f.jpeg).shape for f in frames] == [(60, 80, 3)] * 3  # longer side 80, aspect kept
    assert all((f.width, f.height, f.original_size) == (80, 60, (160, 120)) for f in frames)
    for f, packet in zip(frames, mjpeg_packets(video), strict=True):
        # the camera's frame for the evidence of a flagged one: an MJPEG camera's own JPEG, untouched
        original = capture.originals.get(f.seq)
        assert original == packet
        assert abs(int(decode(packet).mean()) - int(decode(f.jpeg).mean())) <= 3


@pytest.mark.parametrize("size", [(120, 160), (600, 800)])
async def test_references_are_prepared_exactly_as_frames_reach_the_worker(tmp_path: Path, size) -> None:
    """A reference and a frame of the same image must look the same to the model: resized to the
    inspection size, then compressed once. References used to be compressed at full size."""
    from workers.frames import decode_frame
    from workers.station_loader import as_captured

    image = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (*size, 3), np.uint8), (0, 0), 1.5)
    folder = tmp_path / "frames"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "part.png"), image)
    async with StationCapture("s", make_source(str(folder)), fps=120, inspection_size=80) as capture:
        (frame,) = await collect(capture)
    seen = decode_frame(frame.jpeg, frame.width, frame.height, 80)
    assert seen is not None
    assert np.array_equal(as_captured(image, 80), seen)


async def test_originals_of_decoded_sources_are_kept_as_frames(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"FFV1"), 10, (160, 120))
    for index in range(3):
        writer.write(gray_frame(index, (120, 160)))
    writer.release()
    async with StationCapture("s", make_source(str(video)), fps=120, inspection_size=80) as capture:
        frames = await collect(capture)
    assert [marker(f.jpeg) for f in frames] == [0, 1, 2]
    for f in frames:  # no JPEG from the camera: the decoded frame, encoded only if it is flagged
        original = capture.originals.get(f.seq)
        assert isinstance(original, np.ndarray) and original.shape == (120, 160, 3)
        assert abs(int(original.mean()) - int(decode(f.jpeg).mean())) <= 3


async def test_small_frames_are_sent_as_captured_and_not_kept(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 2, size=(120, 160))
    async with StationCapture("s", make_source(str(video)), fps=120, inspection_size=320) as capture:
        frame = (await collect(capture))[0]
    assert frame.jpeg == mjpeg_packets(video)[0]  # the camera's JPEG itself: nothing re-encoded
    assert (frame.width, frame.height, frame.original_size) == (160, 120, (160, 120))
    assert len(capture.originals) == 0  # the frame sent is the original


def mjpeg_packets(video: Path) -> list[bytes]:
    """The JPEGs an MJPEG video holds, as FFmpeg's demuxer hands them out."""
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    assert cap.set(cv2.CAP_PROP_FORMAT, -1)
    packets = []
    while True:
        ok, packet = cap.read()
        if not ok:
            return packets
        packets.append(packet.tobytes())


def read_all(source: FrameSource) -> list[np.ndarray]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def test_an_mjpeg_video_is_read_as_its_jpegs(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 4, size=(120, 160))
    source = make_source(str(video))
    source.open()
    got = []
    while (frame := source.read()) is not None:
        assert source.jpeg is not None and np.array_equal(decode(source.jpeg), frame)
        got.append(source.jpeg)
    assert got == mjpeg_packets(video) and source.jpeg is None  # None after the last frame
    assert [round(float(decode(j).mean()) / STEP) for j in got] == [0, 1, 2, 3]


def test_an_undecodable_mjpeg_frame_is_skipped_and_counted(tmp_path: Path, monkeypatch) -> None:
    video = write_video(tmp_path / "clip.avi", 4)
    real = sources_module._decode_packet
    calls = itertools.count()
    monkeypatch.setattr(sources_module, "_decode_packet", lambda p: None if next(calls) == 2 else real(p))
    source = make_source(str(video))
    source.open()
    frames = read_all(source)
    assert [round(float(f.mean()) / STEP) for f in frames] == [0, 1, 3] and source.corrupt == 1


async def test_a_long_corrupt_stretch_of_a_recorded_video_is_skipped_not_replayed(tmp_path, monkeypatch):
    """More than MAX_BAD_FRAMES undecodable frames in a row made a video file "fail"; capture then
    reopened it, which plays a file from its first frame again: frame 0 was published again and
    again under new seqs, for ever, even without ``loop``."""
    count, bad = 40, range(5, 5 + sources_module.MAX_BAD_FRAMES + 5)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for index in range(count):  # gray levels 6 apart: 40 frames fit in 0-255
        writer.write(np.full((48, 64, 3), index * 6, np.uint8))
    writer.release()
    real = sources_module._decode_packet
    calls = itertools.count()
    monkeypatch.setattr(sources_module, "_decode_packet", lambda p: None if next(calls) in bad else real(p))
    capture = StationCapture("s", make_source(str(video)), fps=1000, options=FAST)
    async with capture:
        frames = await asyncio.wait_for(collect(capture), 20)
    assert [round(float(decode(f.jpeg).mean()) / 6) for f in frames] == [
        i for i in range(count) if i not in bad
    ]
    assert capture.state["corrupt"] == len(bad) and capture.state["reconnects"] == 0


def test_a_live_stream_of_only_bad_frames_still_counts_as_broken(monkeypatch) -> None:
    """The limit stays for cameras: a stream that sends nothing decodable is gone."""

    class Junk(sources_module._OpenCvSource):
        live = True  # type: ignore[assignment]

        def _new_capture(self) -> cv2.VideoCapture:
            raise AssertionError("not opened in this test")

        def describe(self) -> str:
            return "junk stream"

    class Packets:
        def read(self) -> tuple[bool, np.ndarray]:
            return True, np.frombuffer(b"\xff\xd8 not a jpeg", np.uint8)

    source = Junk()
    source._capture, source._raw, source._raw_decoded = Packets(), True, 1  # type: ignore[assignment]
    with pytest.raises(SourceError, match="25 undecodable frames in a row"):
        source.read()
    assert source.corrupt == sources_module.MAX_BAD_FRAMES


def test_mjpeg_that_libjpeg_cannot_read_falls_back_to_ffmpeg_decoding(tmp_path: Path, monkeypatch) -> None:
    video = write_video(tmp_path / "clip.avi", 3)
    monkeypatch.setattr(sources_module, "_decode_packet", lambda p: None)
    source = make_source(str(video))
    source.open()
    frames = read_all(source)
    assert [round(float(f.mean()) / STEP) for f in frames] == [0, 1, 2]  # from the first frame on
    assert source.jpeg is None and source.corrupt == 0


def test_originals_buffer_keeps_the_newest_within_its_byte_budget() -> None:
    buffer = OriginalFrames(max_bytes=3 * 100)
    for seq in range(5):
        buffer.put(seq, np.full((10, 10), seq, np.uint8))  # 100 bytes each
    assert len(buffer) == 3 and buffer.oldest == 2
    assert buffer.get(1) is None
    got = buffer.get(4)
    assert got is not None and int(got[0, 0]) == 4
    buffer.put(9, np.zeros((50, 50), np.uint8))  # larger than the budget: kept alone
    assert len(buffer) == 1 and buffer.get(9) is not None
    for seq in range(10, 15):  # a camera's JPEGs count by their length
        buffer.put(seq, bytes(150))
    assert len(buffer) == 2 and buffer.oldest == 13 and buffer.get(14) == bytes(150)


@pytest.mark.parametrize(
    ("size", "longer", "expected"),
    [
        ((640, 480), 320, (320, 240)),
        ((480, 640), 320, (240, 320)),
        ((300, 200), 320, (300, 200)),
        ((1920, 1080), 336, (336, 189)),
    ],
)
def test_inspection_size_keeps_aspect_and_never_enlarges(size, longer, expected) -> None:
    assert inspection_size(*size, longer) == expected


class SlowRecording(FrameSource):
    """A recorded source whose every read takes ``interval``: slower than any station rate."""

    def __init__(self, count: int, interval: float) -> None:
        super().__init__()
        self.count, self.interval, self.index = count, interval, 0

    @property
    def live(self) -> bool:
        return False

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray | None:
        time.sleep(self.interval)
        if self.index == self.count:
            return None
        self.index += 1
        return gray_frame(self.index - 1)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "slow recording"


def count_wake_ups(capture: StationCapture) -> list[float]:
    """When the reader woke the loop for a recorded frame (a cross-thread call each)."""
    wake_ups: list[float] = []
    post = capture._post

    def counting(callback: Callable[..., object], *args: object) -> None:
        if callback == capture._arrived.set:
            wake_ups.append(time.monotonic())
        post(callback, *args)

    capture._post = counting  # type: ignore[method-assign]
    return wake_ups


async def test_a_busy_consumer_finds_recorded_frames_waiting_without_a_wake_up_each(tmp_path: Path) -> None:
    count = 12  # gray levels up to 240
    source = make_source(str(write_images(tmp_path / "frames", count)))
    capture = StationCapture("s", source, fps=1000, options=CaptureOptions(recorded_queue_size=8))
    wake_ups = count_wake_ups(capture)
    batches: list[list[FrameMessage]] = []
    async with asyncio.timeout(10), capture:  # a frame withheld from a waiting consumer: fail, not hang
        async for frame in capture.frames():
            batches.append([frame, *capture.ready(7)])
            time.sleep(0.02)  # busy (a Redis round trip, an encode) without yielding to the loop
    assert [marker(f.jpeg) for batch in batches for f in batch] == list(range(count))  # in order
    assert max(len(batch) for batch in batches) > 1  # frames that came meanwhile go together
    assert len(wake_ups) < len(batches) <= count / 2


async def test_a_consumer_waiting_for_a_slow_recording_gets_each_frame_at_once() -> None:
    capture = StationCapture("s", SlowRecording(8, 0.1), fps=1000)  # reads slower than the rate
    wake_ups = count_wake_ups(capture)
    async with asyncio.timeout(10), capture:  # a frame withheld from a waiting consumer: fail, not hang
        ages = [time.time() - frame.captured_at async for frame in capture.frames()]
    assert len(ages) == 8
    # handed over as read, not held for the next read (100 ms); the margin is for a loaded machine
    assert max(ages) < 0.08, ages
    assert len(wake_ups) >= 8  # the waiting consumer was woken for each


async def test_a_consumer_still_gets_frames_after_another_one_waiting_beside_it_is_cancelled() -> None:
    capture = StationCapture("s", SlowRecording(6, 0.05), fps=1000)
    async with asyncio.timeout(10), capture:
        other = asyncio.create_task(collect(capture))
        kept = asyncio.create_task(collect(capture))
        await asyncio.sleep(0.01)  # both wait for the first frame (a read takes 50 ms)
        other.cancel()
        frames = await kept
    assert [marker(frame.jpeg) for frame in frames] == list(range(6))


async def test_a_restarted_capture_continues_numbering(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "frames", 3)
    async with StationCapture("s", make_source(str(folder)), fps=120) as first:
        seqs = [frame.seq for frame in await collect(first)]
    async with StationCapture("s", make_source(str(folder)), fps=120, start_seq=first.next_seq) as second:
        seqs += [frame.seq for frame in await collect(second)]
    assert seqs == [0, 1, 2, 3, 4, 5]


async def test_a_live_source_drops_the_oldest_frames_when_the_consumer_is_slow() -> None:
    camera = FakeCamera(interval=0.002)
    options = CaptureOptions(queue_size=2)
    ages: list[float] = []
    async with StationCapture("s", camera, fps=120, options=options) as capture:
        frames: list[FrameMessage] = []
        async for frame in capture.frames():
            ages.append(time.time() - frame.captured_at)
            frames.append(frame)
            if len(frames) == 12:
                break
            await asyncio.sleep(0.05)
        state = capture.state
    seqs = [frame.seq for frame in frames]
    assert seqs == sorted(seqs)
    assert state["dropped"] > 0
    # dropping the newest would hand out frames that waited a whole consumer delay (50 ms)
    # and consecutive seqs; dropping the oldest hands out the freshest ones, far apart
    assert statistics.median(ages[1:]) < 0.03
    assert statistics.median(b - a for a, b in itertools.pairwise(seqs)) > 2


async def test_the_state_reporter_ends_by_itself_when_the_capture_stops() -> None:
    # stop() cancels it too, but a cancellation can be lost (Python 3.11's asyncio.wait_for turned
    # one that landed as its timeout fired into a TimeoutError): the loop must not depend on it
    capture = StationCapture("s", FakeCamera(), fps=20, options=FAST)
    await capture.start()
    try:
        assert capture._reporter is not None and not capture._reporter.done()
        capture._stop.set()
        await asyncio.wait_for(asyncio.shield(capture._reporter), 2.0)  # no cancel sent
    finally:
        await capture.stop()


async def test_a_stop_from_the_role_and_one_from_the_consumer_run_once_to_their_end() -> None:
    """The capture role stops a capture while its consumer's ``async with`` may be stopping it too;
    both wait for the one stop, which a cancelled caller does not cut short."""
    states: list[dict] = []

    async def on_state(state: dict) -> None:
        states.append(state)

    camera = FakeCamera()
    camera.hang_once = 0.3  # the reader is in a read: the stop waits for it
    capture = StationCapture("s", camera, fps=50, on_state=on_state, options=FAST)
    await capture.start()
    while not camera.hanging:
        await asyncio.sleep(0.01)
    cancelled = asyncio.create_task(capture.stop())
    await asyncio.sleep(0.05)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    await asyncio.wait_for(asyncio.gather(capture.stop(), capture.stop()), 5)
    assert capture._thread is not None and not capture._thread.is_alive()
    assert states[-1]["state"] == "offline"


@pytest.mark.parametrize("kind", ["recorded", "live"])
async def test_a_capture_stopped_before_it_starts_reads_nothing(tmp_path: Path, kind: str) -> None:
    source = make_source(str(write_video(tmp_path / "v.avi", 5))) if kind == "recorded" else FakeCamera()
    capture = StationCapture("s", source, fps=50, options=FAST)
    await capture.stop()
    async with capture:
        assert [f async for f in capture.frames()] == []
    assert capture._thread is None


@pytest.mark.parametrize("kind", ["recorded", "live"])
async def test_frames_are_paced_to_the_station_fps(tmp_path: Path, kind: str) -> None:
    source: FrameSource = FakeCamera(interval=0.002)
    if kind == "recorded":
        source = make_source(str(write_images(tmp_path / "frames", 5)), loop=True)
    states = States()
    async with StationCapture("s", source, fps=20, on_state=states, options=FAST) as capture:
        frames = await collect_for(capture, 1.0)
        fps = capture.state["fps"]
    assert 15 <= len(frames) <= 25
    assert 12 <= fps <= 28
    assert len(states.reports) >= 5  # reported every 0.1 s, not only on changes


async def test_a_camera_that_disappears_is_reconnected() -> None:
    camera = FakeCamera()
    states = States()
    async with StationCapture("s", camera, fps=50, on_state=states, options=FAST) as capture:
        drain = asyncio.create_task(collect(capture))
        await states.wait_for(lambda s: s["state"] == "online")
        camera.unplugged = True  # reads give nothing and reopening fails
        lost = await states.wait_for(lambda s: s["state"] == "reconnecting")
        await asyncio.sleep(0.3)
        camera.unplugged = False
        back = await states.wait_for(lambda s: s["state"] == "online" and s["reconnects"] == 1)
        frames_before = back["frames"]
        await asyncio.sleep(0.2)
        assert capture.state["frames"] > frames_before
    await drain
    assert lost["last_error"]
    assert states.names[:3] == ["online", "reconnecting", "online"]
    assert len(camera.open_times) >= 3  # retried while unplugged


async def test_a_camera_down_at_start_is_retried_with_capped_backoff_and_goes_offline() -> None:
    camera = FakeCamera()
    camera.unplugged = True
    states = States()
    options = CaptureOptions(
        report_interval_s=0.1, retry_initial_s=0.05, retry_max_s=0.3, offline_after_s=0.4
    )
    started = time.monotonic()
    async with StationCapture("s", camera, fps=10, on_state=states, options=options):
        assert time.monotonic() - started < 0.2  # start() does not wait for a live camera
        offline = await states.wait_for(lambda s: s["state"] == "offline", timeout=2)
        while len(camera.open_times) < 6:
            await asyncio.sleep(0.02)
    assert offline["last_error"] == "fake camera unplugged"
    assert states.names[:2] == ["reconnecting", "offline"]
    gaps = [b - a for a, b in itertools.pairwise(camera.open_times)]
    # 0.05, 0.1, 0.2, then capped at 0.3
    for gap, expected in zip(gaps[:5], [0.05, 0.1, 0.2, 0.3, 0.3], strict=True):
        assert expected - 0.01 <= gap <= expected + 0.04


async def test_a_stalled_read_is_reported_while_it_hangs_and_then_reconnected() -> None:
    camera = FakeCamera()
    states = States()
    options = CaptureOptions(report_interval_s=0.1, retry_initial_s=0.05, stall_timeout_s=0.2)
    async with StationCapture("s", camera, fps=50, on_state=states, options=options) as capture:
        drain = asyncio.create_task(collect(capture))
        await states.wait_for(lambda s: s["state"] == "online")
        camera.hang_once = 0.6
        stalled = await states.wait_for(lambda s: s["state"] == "reconnecting", timeout=1)
        assert camera.hanging  # the dashboard learns of it before the read returns
        await states.wait_for(lambda s: s["state"] == "online" and s["reconnects"] == 1, timeout=2)
    await drain
    assert "stalled" in stalled["last_error"]


async def test_a_looping_video_renamed_away_and_back_is_reconnected(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 5)
    away = tmp_path / "moved.avi"
    states = States()
    source = make_source(str(video), loop=True)
    async with StationCapture("s", source, fps=100, on_state=states, options=FAST) as capture:
        drain = asyncio.create_task(collect(capture))
        await states.wait_for(lambda s: s["state"] == "online")
        video.rename(away)
        lost = await states.wait_for(lambda s: s["state"] == "reconnecting")
        away.rename(video)
        await states.wait_for(lambda s: s["state"] == "online" and s["reconnects"] == 1)
    await drain
    assert str(video) in lost["last_error"]


async def test_a_corrupt_image_in_a_folder_is_skipped_and_counted(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "frames", 4)
    (folder / "frame_002.png").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    states = States()
    async with StationCapture("s", make_source(str(folder)), fps=120, on_state=states) as capture:
        frames = await collect(capture)
    assert [marker(frame.jpeg) for frame in frames] == [0, 1, 3]
    assert states.reports[-1]["corrupt"] == 1
    assert states.reports[-1]["state"] == "finished"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: str(tmp / "missing.avi"), "not found"),
        (lambda tmp: str(tmp / "*.png"), "no files match"),
        (lambda tmp: str(tmp), "no image files"),
        (lambda tmp: "rtsp//bad", "not a valid camera URL"),
        (lambda tmp: "", "must not be empty"),
    ],
)
def test_bad_sources_fail_with_a_message_naming_them(
    tmp_path: Path, make: Callable[[Path], str], expected: str
) -> None:
    source = make(tmp_path)
    with pytest.raises(SourceError, match=expected) as error:
        make_source(source)
    assert repr(source) in str(error.value)


async def test_an_unreadable_video_fails_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"not a video")
    states = States()
    capture = StationCapture("s", make_source(str(bad)), fps=5, on_state=states)
    with pytest.raises(SourceError, match=r"broken\.avi"):
        await capture.start()
    assert not [thread for thread in threading.enumerate() if thread.name == "capture-s"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [(9, "cannot open USB camera 9"), ("rtsp://127.0.0.1:1/cam", "cannot open rtsp://127.0.0.1:1/cam")],
)
async def test_an_unreachable_camera_is_reported_and_retried(source: int | str, expected: str) -> None:
    states = States()
    capture = StationCapture("s", make_source(source), fps=5, on_state=states, options=FAST)
    async with capture:  # starts although the camera is not there: it may come up later
        lost = await states.wait_for(lambda s: s["state"] == "reconnecting")
    assert lost["live"] is True
    assert lost["last_error"].startswith(expected)


def test_image_folders_play_in_natural_order(tmp_path: Path) -> None:
    for name in ("frame10.png", "frame2.png", "frame1.png", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    names = [Path(path).name for path in ImageSequenceSource(str(tmp_path)).list_files()]
    assert names == ["frame1.png", "frame2.png", "frame10.png"]


def test_stream_credentials_never_reach_the_description() -> None:
    source = make_source("rtsp://admin:s3cret@10.0.0.7:554/stream1")
    assert isinstance(source, StreamSource) and source.live
    assert source.describe() == "rtsp://admin:***@10.0.0.7:554/stream1"
