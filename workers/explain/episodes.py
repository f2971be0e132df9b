"""Defect episodes: flagged frames of one station, close in sequence, whose regions overlap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.messages import ResultMessage

Box = tuple[int, int, int, int]  # x, y, w, h in original-frame pixels


@dataclass
class Episode:
    """One defect seen over several frames; ``head`` is the frame the LLM explains for all of them."""

    station_id: str
    head: int
    last: int
    boxes: list[Box]
    frames: int = 1


@dataclass(frozen=True)
class Assignment:
    """Where a flagged frame belongs: ``is_head`` frames go to the LLM, the others point at ``head``."""

    head: int
    is_head: bool


class EpisodeTracker:
    """Groups flagged frames into episodes, in memory.

    A frame joins an open episode of its station when its seq is within ``gap`` of the episode's
    latest frame and one of its boxes overlaps one of the episode's latest boxes (a frame without
    regions overlaps anything: the detector found the whole frame unusual). Episodes that fell
    more than ``gap`` frames behind are closed. After a restart the state is empty, so at most one
    episode per station is explained a second time.
    """

    def __init__(self, gap: int = 2, margin: float = 0.05) -> None:
        if gap < 1:
            raise ValueError(f"episode gap must be at least 1 frame, got {gap}")
        self.gap = gap
        self.margin = margin  # boxes grow by this fraction of their size: parts move between frames
        self._open: dict[str, list[Episode]] = {}

    def assign(self, result: ResultMessage, gap: int | None = None) -> Assignment:
        gap = self.gap if gap is None else gap
        boxes = [_box(r) for r in result.regions if _has_box(r)]
        episodes = self._open.setdefault(result.station_id, [])
        episodes[:] = [e for e in episodes if result.seq - e.last <= gap]
        for e in episodes:
            if result.seq == e.head:  # redelivered head: it still needs its explanation
                return Assignment(e.head, True)
            if abs(result.seq - e.last) <= gap and _overlap(boxes, e.boxes, self.margin):
                if result.seq > e.last:
                    e.last, e.boxes = result.seq, boxes or e.boxes
                e.frames += 1
                return Assignment(e.head, False)
        episodes.append(Episode(result.station_id, result.seq, result.seq, boxes))
        return Assignment(result.seq, True)

    def open_episodes(self, station_id: str) -> list[Episode]:
        return list(self._open.get(station_id, []))


def _has_box(region: dict[str, Any]) -> bool:
    return all(isinstance(region.get(k), int | float) for k in ("x", "y", "w", "h"))


def _box(region: dict[str, Any]) -> Box:
    return int(region["x"]), int(region["y"]), int(region["w"]), int(region["h"])


def _overlap(a: list[Box], b: list[Box], margin: float) -> bool:
    if not a or not b:
        return True
    return any(_intersects(p, q, margin) for p in a for q in b)


def _intersects(p: Box, q: Box, margin: float) -> bool:
    px, py, pw, ph = p
    qx, qy, qw, qh = q
    mx, my = margin * max(pw, qw), margin * max(ph, qh)
    return px - mx < qx + qw and qx - mx < px + pw and py - my < qy + qh and qy - my < py + ph
