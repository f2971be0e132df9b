"""Shared fixtures: a folder with a valid station file and its reference images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# the first bytes of a PNG: enough for the loader's "is this really an image" check
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(16)

# line numbers matter: the tests below assert them
VALID_STATION = """\
id: line-1
name: Line 1
camera:
  source: 0
  fps: 5
product:
  name: bottle
references:
  folder: refs
  k: 2
"""

StationWriter = Callable[..., Path]


@pytest.fixture
def station_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "stations"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "good-000.png").write_bytes(PNG_BYTES)
    (folder / "empty").mkdir()
    return folder


@pytest.fixture
def write_station(station_dir: Path) -> StationWriter:
    def write(text: str = VALID_STATION, name: str = "station.yaml") -> Path:
        path = station_dir / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
