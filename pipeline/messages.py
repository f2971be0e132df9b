"""Messages that cross a process boundary (Redis Stream entries), versioned and defined once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# 2: frames carried the full-size JPEG. 3: frames carry the inspection-size JPEG and the original
# size; capture keeps the originals and sends those of flagged frames on the evidence stream
SCHEMA_VERSION = 3


class MessageError(ValueError):
    """A stream entry that is truncated, of an unknown version or otherwise not a valid message."""


def frame_id(station_id: str, seq: int) -> str:
    """The key of a frame everywhere: ``{station}:{seq}``."""
    return f"{station_id}:{seq}"


def _get(fields: dict[bytes, bytes], name: str) -> bytes:
    try:
        return fields[name.encode()]
    except KeyError as e:
        raise MessageError(f"message has no field {name!r}") from e


def _check_version(fields: dict[bytes, bytes], kind: str) -> None:
    got = _get(fields, "v").decode(errors="replace")
    if got != str(SCHEMA_VERSION):
        raise MessageError(f"{kind} message of version {got!r}; this build reads version {SCHEMA_VERSION}")


@dataclass(frozen=True)
class FrameMessage:
    """A captured frame, JPEG-encoded once at the inspection size (never larger than captured).

    ``original_width`` x ``original_height`` is the camera's frame size: region boxes are given in
    those pixels, and capture keeps the original of a recent frame for the evidence of a flagged one.
    The evidence stream carries such originals as frame messages of their own full size.
    """

    station_id: str
    seq: int
    captured_at: float  # unix seconds at capture
    jpeg: bytes  # the frame, resized to the inspection size when the camera's is larger
    width: int  # size of the JPEG, so a worker can pick the JPEG reduction before decoding
    height: int
    original_width: int = 0  # 0: the same as width (the frame was not resized)
    original_height: int = 0

    @property
    def id(self) -> str:
        return frame_id(self.station_id, self.seq)

    @property
    def original_size(self) -> tuple[int, int]:
        """(width, height) of the frame as the camera delivered it."""
        return (self.original_width or self.width, self.original_height or self.height)

    def to_fields(self) -> dict[str, bytes | str | int | float]:
        ow, oh = self.original_size
        return {
            "v": SCHEMA_VERSION,
            "station": self.station_id,
            "seq": self.seq,
            "t": repr(self.captured_at),
            "w": self.width,
            "h": self.height,
            "ow": ow,
            "oh": oh,
            "jpeg": self.jpeg,
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> FrameMessage:
        _check_version(fields, "frame")
        try:
            return cls(
                station_id=_get(fields, "station").decode(),
                seq=int(_get(fields, "seq")),
                captured_at=float(_get(fields, "t")),
                jpeg=_get(fields, "jpeg"),
                width=int(_get(fields, "w")),
                height=int(_get(fields, "h")),
                original_width=int(_get(fields, "ow")),
                original_height=int(_get(fields, "oh")),
            )
        except (ValueError, UnicodeDecodeError) as e:
            if isinstance(e, MessageError):
                raise
            raise MessageError(f"malformed frame message: {e}") from e


#: the JSON types of a result's fields (bool only where it says so: to Python it is an int too)
_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "station_id": (str,),
    "seq": (int,),
    "captured_at": (int, float),
    "inspected_at": (int, float),
    "score": (int, float),
    "flagged": (bool,),
    "latency_ms": (int, float),
    "regions": (list,),
    "worker": (str,),
    "timings": (dict,),
    "width": (int,),
    "height": (int,),
}


@dataclass(frozen=True)
class ResultMessage:
    """What a worker found in one frame; also the payload of the flagged stream."""

    station_id: str
    seq: int
    captured_at: float
    inspected_at: float
    score: float  # normalised, 0.5 = calibrated threshold
    flagged: bool
    latency_ms: float  # capture to result
    regions: list[dict[str, Any]] = field(default_factory=list)
    heatmap_png: bytes = b""  # small uint8 heat map, PNG-encoded
    worker: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    frame_jpeg: bytes = b""  # the inspected frame, on flagged results only: evidence, explainer input
    #: the camera's frame size, in whose pixels ``regions`` are given (frame_jpeg may be smaller)
    width: int = 0
    height: int = 0

    @property
    def id(self) -> str:
        return frame_id(self.station_id, self.seq)

    def to_fields(self) -> dict[str, bytes | str | int | float]:
        meta = asdict(self)
        heatmap, frame = meta.pop("heatmap_png"), meta.pop("frame_jpeg")
        fields: dict[str, bytes | str | int | float] = {
            "v": SCHEMA_VERSION,
            "meta": json.dumps(meta),
            "heatmap": heatmap,
        }
        if frame:
            fields["frame"] = frame
        return fields

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> ResultMessage:
        _check_version(fields, "result")
        try:
            meta = json.loads(_get(fields, "meta"))
            heatmap, frame = fields.get(b"heatmap", b""), fields.get(b"frame", b"")
            message = cls(**meta, heatmap_png=heatmap, frame_jpeg=frame)
        except (ValueError, TypeError) as e:
            if isinstance(e, MessageError):
                raise
            raise MessageError(f"malformed result message: {e}") from e
        message._check_types()
        return message

    def _check_types(self) -> None:
        """Valid JSON of the wrong types (a null score, a string seq) would pass ``from_fields`` and
        crash the recorder's insert (TypeError), and the whole batch would be redelivered with it
        until every good result in it was dead-lettered too."""
        for name, types in _RESULT_TYPES.items():
            value = getattr(self, name)
            # bool is an int to Python, never a number or a count here
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise MessageError(f"malformed result message: {name} is {value!r}")
        if not all(isinstance(r, dict) for r in self.regions):
            raise MessageError(f"malformed result message: regions {self.regions!r} are not objects")


#: what a verdict says about the LLM's part; the store keeps the same words in ``verdict_status``
VERDICT_KINDS = ("ok", "unparsed", "skipped", "failed", "episode")


@dataclass(frozen=True)
class VerdictMessage:
    """The explainer's verdict on one flagged frame (payload of ``verdicts:{station}``).

    ``status``: ok (validated JSON answer), unparsed (the model's text kept in ``raw``), skipped
    (never asked; ``note`` says why, e.g. "backlog"), failed (the server kept failing; ``note``
    holds the error), episode (same defect episode as frame ``episode_seq``, whose verdict stands
    for this one). ``episode_seq`` is the frame explained for this frame's episode.
    """

    station_id: str
    seq: int
    status: str
    episode_seq: int
    explained_at: float
    anomaly: bool | None = None
    location: str | None = None
    defect_type: str | None = None
    description: str | None = None
    confidence: float | None = None
    raw: str | None = None
    note: str | None = None
    model: str = ""
    latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in VERDICT_KINDS:
            raise MessageError(f"verdict status {self.status!r} is not one of {', '.join(VERDICT_KINDS)}")

    @property
    def id(self) -> str:
        return frame_id(self.station_id, self.seq)

    def to_fields(self) -> dict[str, bytes | str | int | float]:
        return {"v": SCHEMA_VERSION, "meta": json.dumps(asdict(self))}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> VerdictMessage:
        _check_version(fields, "verdict")
        try:
            return cls(**json.loads(_get(fields, "meta")))
        except (ValueError, TypeError) as e:
            if isinstance(e, MessageError):
                raise
            raise MessageError(f"malformed verdict message: {e}") from e
