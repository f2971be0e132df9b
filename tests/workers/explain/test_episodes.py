"""Flagged frames of one defect episode are explained once."""

from __future__ import annotations

from tests.workers.explain.conftest import flagged_result, region
from workers.explain.episodes import EpisodeTracker

TOP_LEFT = [region(40, 30, 40, 40)]
BOTTOM_RIGHT = [region(250, 180, 40, 40, "bottom right")]


def _heads(frames: list[tuple[str, int, list]], gap: int = 2) -> list[tuple[int, bool]]:
    tracker = EpisodeTracker(gap=gap)
    out = []
    for station, seq, regions in frames:
        place = tracker.assign(flagged_result(station, seq, regions))
        out.append((place.head, place.is_head))
    return out


def test_consecutive_overlapping_frames_are_one_episode() -> None:
    moving = [region(40 + 5 * i, 30, 40, 40) for i in range(4)]  # the part moves a little each frame
    frames = [("a", 10 + i, [r]) for i, r in enumerate(moving)]
    assert _heads(frames) == [(10, True), (10, False), (10, False), (10, False)]


def test_a_gap_longer_than_allowed_starts_a_new_episode() -> None:
    frames = [("a", 10, TOP_LEFT), ("a", 12, TOP_LEFT), ("a", 15, TOP_LEFT)]
    assert _heads(frames, gap=2) == [(10, True), (10, False), (15, True)]


def test_a_defect_elsewhere_is_another_episode() -> None:
    frames = [("a", 1, TOP_LEFT), ("a", 2, BOTTOM_RIGHT), ("a", 3, TOP_LEFT), ("a", 4, BOTTOM_RIGHT)]
    assert _heads(frames) == [(1, True), (2, True), (1, False), (2, False)]


def test_stations_never_share_an_episode() -> None:
    assert _heads([("a", 5, TOP_LEFT), ("b", 6, TOP_LEFT)]) == [(5, True), (6, True)]


def test_a_redelivered_head_is_explained_again_and_frames_without_regions_join() -> None:
    frames = [("a", 7, TOP_LEFT), ("a", 7, TOP_LEFT), ("a", 8, [])]
    assert _heads(frames) == [(7, True), (7, True), (7, False)]
