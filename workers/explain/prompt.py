"""The question put to the vision-language model, in AnomalyGPT's shape, as a backend-neutral chat."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from pipeline.evidence import decode_heatmap, overlay
from pipeline.messages import ResultMessage

QUESTION = "Is there any anomaly in the image? Where is it, and what kind of defect is it?"
SYSTEM = (
    "You are a visual inspection assistant on a factory line. You look at photos of parts and say "
    "whether a part is defective, where the defect is and what kind it is. You answer with one JSON "
    "object and nothing else."
)
ANSWER_FORMAT = (
    'Answer with only this JSON object: {"anomaly": true or false, "location": "where, in words '
    '(e.g. top left)", "defect_type": "e.g. scratch, crack, hole, stain, missing part; none if no '
    'anomaly", "description": "one sentence on what you see", "confidence": a number from 0 to 1}'
)


@dataclass(frozen=True)
class Turn:
    """One chat message: who speaks, the text, and JPEG images shown before the text."""

    role: Literal["system", "user", "assistant"]
    text: str
    images: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Chat:
    """A conversation to complete; backends turn it into their own wire or template format."""

    turns: tuple[Turn, ...]
    frame_id: str = ""  # for logs only
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def images(self) -> list[bytes]:
        return [image for turn in self.turns for image in turn.images]

    def followed_by(self, answer: str, correction: str) -> Chat:
        """This chat with the model's answer and a request to fix it: the one retry on bad output."""
        extra = (Turn("assistant", answer), Turn("user", correction))
        return Chat(self.turns + extra, self.frame_id, self.meta)


def localization_words(result: ResultMessage) -> str:
    """The detector's result in words: score against the threshold, then each region's place and size."""
    lines = [
        f"The anomaly detector scored this frame {result.score:.2f} "
        "(0.50 is its threshold; higher means more anomalous) and flagged it."
    ]
    if not result.regions:
        lines.append("It found no distinct region; the whole frame looks unusual to it.")
    for i, r in enumerate(result.regions, 1):
        lines.append(
            f"Region {i}: {r.get('position', 'unknown position')}, {100 * float(r.get('area', 0)):.1f}% "
            f"of the image, peak score {float(r.get('peak', 0)):.2f}."
        )
    return "\n".join(lines)


def build_chat(description: str, result: ResultMessage, frame_jpeg: bytes, image_size: int) -> Chat:
    """The prompt: product description, the frame, the localization in words and marked, the question."""
    frame = cv2.imdecode(np.frombuffer(frame_jpeg, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        raise ValueError(f"{result.id}: the frame is not a decodable JPEG")
    marked = overlay(frame, decode_heatmap(result.heatmap_png), result.regions, (result.width, result.height))
    text = "\n".join(
        [
            description,
            "The first image is the camera frame. The second image is the same frame with the anomaly "
            "detector's result marked: a heat map (red = most anomalous) and red boxes around the "
            "suspicious regions, labelled with their position.",
            localization_words(result),
            "The detector can be wrong: judge the part yourself.",
            QUESTION,
            ANSWER_FORMAT,
        ]
    )
    images = (_jpeg(frame, image_size), _jpeg(marked, image_size))
    user = Turn("user", text, images)
    return Chat((Turn("system", SYSTEM), user), frame_id=result.id)


def correction(error: str) -> str:
    """What the model is told after an invalid answer (it gets exactly one more chance)."""
    return f"Your answer could not be used: {error}. {ANSWER_FORMAT}"


def _jpeg(image: np.ndarray, longer_side: int) -> bytes:
    h, w = image.shape[:2]
    scale = longer_side / max(h, w)
    if scale < 1:  # never upscale: it adds tokens, not detail
        image = cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("image could not be JPEG-encoded")
    return buf.tobytes()
