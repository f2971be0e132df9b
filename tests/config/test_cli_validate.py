"""`linewatch config validate`: exit 0 for valid files, 1 with file:line problems, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.config.conftest import VALID_STATION, StationWriter

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_valid_file_exits_0(write_station: StationWriter, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(write_station())]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "1 file(s) valid" in captured.out


def test_problems_exit_1_with_one_line_each(
    write_station: StationWriter, station_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_station(VALID_STATION.replace("fps: 5", "fps: 500"), name="bad.yaml")
    missing = station_dir / "missing.yaml"
    assert main(["config", "validate", str(bad), str(missing)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{bad}:5: camera.fps = 500: must be at most 120 (Frames per second to inspect)",
        f"{missing}: no such file or folder",
    ]


@pytest.mark.parametrize(
    ("text", "code", "stderr"),
    [
        (VALID_STATION, 0, ""),
        (
            VALID_STATION.replace("source: 0", "source: ftp://x"),
            1,
            '{file}:4: camera.source = "ftp',
        ),
        ("[", 1, "{file}:1: YAML syntax error: "),
    ],
    ids=["valid", "bad-url", "yaml-syntax"],
)
def test_command_line_exit_code_and_no_traceback(
    write_station: StationWriter, text: str, code: int, stderr: str
) -> None:
    path = write_station(text)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "config", "validate", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith(stderr.replace("{file}", str(path))), result.stderr
