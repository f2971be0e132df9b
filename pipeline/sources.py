"""Frame sources through OpenCV: USB devices, RTSP/HTTP streams, video files and image folders."""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from abc import ABC, abstractmethod

import cv2
import numpy as np

from config.loader import IMAGE_SUFFIXES
from config.station import looks_like_url, normalize_source
from pipeline.errors import SourceError

logger = logging.getLogger(__name__)

DEFAULT_OPEN_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 10.0
#: consecutive undecodable frames of a live stream skipped before it counts as broken
MAX_BAD_FRAMES = 25
_GLOB_CHARS = "*?["
_CREDENTIALS = re.compile(r"(//[^/@:]*):[^/@]*@")
_DIGITS = re.compile(r"(\d+)")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: camera URLs often carry credentials."""
    return _CREDENTIALS.sub(r"\1:***@", url)


def _natural_key(path: str) -> list[int | str]:
    # "frame2" before "frame10", as a person numbering files without zero padding expects
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(path)]


class FrameSource(ABC):
    """A blocking reader of BGR uint8 frames; used by one thread at a time.

    ``read()`` returns None at the end of a recorded source and when a live source gave no
    frame (the capture treats the latter as a failure); it raises SourceError when the source
    broke. ``open()`` may be called again after a failure or ``close()`` to reopen.
    """

    def __init__(self) -> None:
        self.corrupt = 0  # files or frames skipped because they could not be decoded
        # the camera's own JPEG of the frame read() last returned, where it sent one (MJPEG): the
        # original is kept and sent as it came, never re-encoded; None for other sources
        self.jpeg: bytes | None = None

    @property
    @abstractmethod
    def live(self) -> bool:
        """Live sources run on their own clock and may drop frames; recorded ones never do."""

    @abstractmethod
    def open(self) -> None:
        """(Re)open the source; raises SourceError naming the source when it cannot."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame (BGR uint8, H×W×3), or None (see the class docstring)."""

    @abstractmethod
    def close(self) -> None:
        """Release the device, stream or file; safe to call when not open."""

    @abstractmethod
    def describe(self) -> str:
        """The source in words for logs and the dashboard, without credentials."""


class _OpenCvSource(FrameSource):
    """Shared handling of a ``cv2.VideoCapture``.

    Through FFmpeg, an MJPEG video or stream is read as its JPEG packets, decoded here with
    libjpeg-turbo (about as fast as FFmpeg's decoder with its colour conversion) and kept in
    ``jpeg``, so capture can keep and send the camera's own JPEG as the original. A
    packet that does not decode is skipped and counted in ``corrupt``; when the first one after
    opening does not, the source falls back to FFmpeg's own decoding for good.
    """

    _hint = ""  # appended to "cannot open …": what a person should check
    _packets = False  # FFmpeg-backed: may read an MJPEG source as JPEG packets

    def __init__(self) -> None:
        super().__init__()
        self._capture: cv2.VideoCapture | None = None
        self._raw = False  # reading JPEG packets now
        self._raw_failed = False  # this source's packets did not decode: FFmpeg decodes instead
        self._raw_decoded = 0  # packets decoded since opening

    @abstractmethod
    def _new_capture(self) -> cv2.VideoCapture: ...

    def open(self) -> None:
        self.close()
        try:
            capture = self._new_capture()
        except cv2.error as e:
            raise SourceError(f"cannot open {self.describe()}: {e}") from e
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.describe()}{self._hint}")
        self._capture = capture
        self._raw_decoded = 0
        self._raw = self._packets and not self._raw_failed and _is_mjpeg(capture)
        if self._raw:
            self._raw = bool(capture.set(cv2.CAP_PROP_FORMAT, -1))  # -1: packets, not pixels

    def read(self) -> np.ndarray | None:
        if self._capture is None:
            raise SourceError(f"{self.describe()} is not open")
        self.jpeg = None
        bad = 0
        # a camera that keeps sending bad frames is broken; a file's bad stretch ends where it ends
        # (capture would reopen it, and a recorded file reopened plays again from its first frame)
        while not self.live or bad < MAX_BAD_FRAMES:
            try:
                ok, frame = self._capture.read()
            except cv2.error as e:
                raise SourceError(f"cannot read {self.describe()}: {e}") from e
            if not ok or frame is None:
                return None
            if not self._raw:
                return np.asarray(frame)
            image = _decode_packet(frame)
            if image is not None:
                self._raw_decoded += 1
                self.jpeg = frame.tobytes()
                return image
            if not self._raw_decoded:  # not a JPEG libjpeg reads (or broken from the start)
                logger.warning("%s: MJPEG packets do not decode; FFmpeg decodes instead", self.describe())
                self._raw_failed = True
                self.open()
                return self.read()
            self.corrupt += 1
            bad += 1
        raise SourceError(f"{self.describe()}: {MAX_BAD_FRAMES} undecodable frames in a row")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _is_mjpeg(capture: cv2.VideoCapture) -> bool:
    # the container's tag (MJPG in AVI), else FFmpeg's codec name cut to four letters ("mjpe")
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    return bytes((code >> shift) & 0xFF for shift in (0, 8, 16, 24)).upper() in (b"MJPG", b"MJPE", b"JPEG")


def _decode_packet(packet: np.ndarray) -> np.ndarray | None:
    try:
        image = cv2.imdecode(packet.reshape(-1), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    return None if image is None else np.asarray(image)


class DeviceSource(_OpenCvSource):
    """A USB (V4L2/UVC) camera by device index."""

    _hint = " (is it connected and not used by another program?)"

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    @property
    def live(self) -> bool:
        return True

    def _new_capture(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(self.index)
        # a deep driver buffer would hand out stale frames after every slow read
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def describe(self) -> str:
        return f"USB camera {self.index}"


class StreamSource(_OpenCvSource):
    """An RTSP or HTTP(S) camera stream, read through FFmpeg with open and read timeouts."""

    _hint = " (is the camera reachable, and are the URL and credentials right?)"
    _packets = True

    def __init__(
        self,
        url: str,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT_S,
        read_timeout: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.url = url
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout

    @property
    def live(self) -> bool:
        return True

    def read(self) -> np.ndarray | None:
        """The next frame; frames the decoder rejects (a corrupt JPEG in an MJPEG stream, a broken
        H.264 slice) are skipped and counted in ``corrupt`` while the stream keeps delivering.

        A failed read that comes at once is a bad frame; one that took a second or more, or a run
        of ``MAX_BAD_FRAMES`` bad frames, means the stream is gone (None: capture reconnects).
        """
        for _ in range(MAX_BAD_FRAMES):
            started = time.monotonic()
            frame = super().read()
            if frame is not None or time.monotonic() - started >= 1.0:
                return frame
            self.corrupt += 1
        return None

    def _new_capture(self) -> cv2.VideoCapture:
        params: list[int] = []
        # without timeouts FFmpeg can block for minutes on a camera that went away
        for name, seconds in (
            ("CAP_PROP_OPEN_TIMEOUT_MSEC", self.open_timeout),
            ("CAP_PROP_READ_TIMEOUT_MSEC", self.read_timeout),
        ):
            if hasattr(cv2, name):  # older OpenCV builds lack them
                params += [getattr(cv2, name), int(seconds * 1000)]
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)

    def describe(self) -> str:
        return redact_url(self.url)


class VideoFileSource(_OpenCvSource):
    """A recorded video file; with ``loop`` it is reopened at its end and plays again."""

    _packets = True

    def __init__(self, path: str, loop: bool = False) -> None:
        super().__init__()
        self.path = path
        self.loop = loop

    @property
    def live(self) -> bool:
        return False

    def _new_capture(self) -> cv2.VideoCapture:
        if not os.path.isfile(self.path):
            raise SourceError(f"video file not found: {self.path}")
        # FFmpeg explicitly: CAP_ANY would read "img%03d.png"-like names as image sequences
        return cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)

    def read(self) -> np.ndarray | None:
        frame = super().read()
        if frame is not None or not self.loop:
            return frame
        # reopen rather than seek: seeking is unreliable in some containers, and a file that
        # was replaced by a new recording is picked up on the next pass
        self.open()
        frame = super().read()
        if frame is None:
            raise SourceError(f"{self.describe()} has no readable frames")
        return frame

    def describe(self) -> str:
        return f"video file {self.path}"


class ImageSequenceSource(FrameSource):
    """Images of a folder, a glob or a single image file, in natural sort order.

    Unreadable files are skipped, logged once and counted once in ``corrupt``. With ``loop``
    the files are listed again at the end of each pass, so new images are picked up.
    """

    def __init__(self, location: str, loop: bool = False) -> None:
        super().__init__()
        self.location = location
        self.loop = loop
        self._files: list[str] = []
        self._next = 0
        self._read_any = False
        self._unreadable: set[str] = set()

    @property
    def live(self) -> bool:
        return False

    def list_files(self) -> list[str]:
        """The image files the source would play now, in order."""
        if os.path.isdir(self.location):
            files = [
                entry.path
                for entry in os.scandir(self.location)
                if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
                and not entry.name.startswith(".")  # editor and OS droppings
                and entry.is_file()
            ]
        elif any(char in self.location for char in _GLOB_CHARS):
            files = [path for path in glob.glob(self.location, recursive=True) if os.path.isfile(path)]
        else:
            files = [self.location] if os.path.isfile(self.location) else []
        return sorted(files, key=_natural_key)

    def empty_message(self) -> str:
        if os.path.isdir(self.location):
            return f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {self.location}"
        if any(char in self.location for char in _GLOB_CHARS):
            return f"no files match {self.location}"
        return f"image file not found: {self.location}"

    def open(self) -> None:
        files = self.list_files()
        if not files:
            raise SourceError(self.empty_message())
        self._files = files
        self._next = 0
        self._read_any = False

    def read(self) -> np.ndarray | None:
        while True:
            if self._next >= len(self._files):
                if not self.loop:
                    return None
                if not self._read_any:  # a pass of only broken files would spin forever
                    raise SourceError(
                        f"none of the {len(self._files)} files of {self.describe()} is readable"
                    )
                self.open()
            path = self._files[self._next]
            self._next += 1
            frame = self._imread(path)
            if frame is not None:
                self._read_any = True
                return frame
            if path not in self._unreadable:
                self._unreadable.add(path)
                self.corrupt += 1
                logger.warning("%s: skipping unreadable image %s", self.describe(), path)

    @staticmethod
    def _imread(path: str) -> np.ndarray | None:
        try:
            frame = cv2.imread(path, cv2.IMREAD_COLOR)  # gray and 16-bit images come back as BGR uint8
        except cv2.error:
            return None
        return None if frame is None else np.asarray(frame)

    def close(self) -> None:
        self._files = []
        self._next = 0

    def describe(self) -> str:
        kind = "image folder" if os.path.isdir(self.location) else "images"
        return f"{kind} {self.location}"


def make_source(
    source: int | str,
    loop: bool = False,
    *,
    open_timeout: float = DEFAULT_OPEN_TIMEOUT_S,
    read_timeout: float = DEFAULT_READ_TIMEOUT_S,
) -> FrameSource:
    """The FrameSource for a station's ``camera.source``; raises SourceError for a bad one.

    Paths should be absolute (the config loader resolves them); relative ones are taken from
    the working directory. Files and globs are checked here so a typo fails at start-up.
    """
    try:
        value = normalize_source(source)
    except ValueError as e:
        raise SourceError(f"camera source {source!r}: {e}") from e
    if isinstance(value, int):
        return DeviceSource(value)
    if looks_like_url(value):  # normalize_source has checked it is a usable camera URL
        return StreamSource(value, open_timeout, read_timeout)
    if os.path.isfile(value) and os.path.splitext(value)[1].lower() not in IMAGE_SUFFIXES:
        return VideoFileSource(value, loop)
    if not os.path.exists(value) and not any(char in value for char in _GLOB_CHARS):
        raise SourceError(f"camera source {value!r}: file or folder not found")
    images = ImageSequenceSource(value, loop)
    if not images.list_files():
        raise SourceError(f"camera source {value!r}: {images.empty_message()}")
    return images
