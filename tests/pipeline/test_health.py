"""`linewatch <role> --check` (container healthchecks): exit 0 when what the role needs is there,
1 with a FAIL line naming what is missing; and the JSON log lines carry station and frame ids."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline import log_format
from pipeline.cli import main
from tests.pipeline.redis_fixtures import EXTERNAL_URL, _external_or_skip
from tests.pipeline.test_metrics import station_yaml


@pytest.fixture
def external_redis(monkeypatch: pytest.MonkeyPatch) -> str:
    _external_or_skip().close()
    monkeypatch.setenv("LINEWATCH_REDIS_URL", EXTERNAL_URL)
    return EXTERNAL_URL


@pytest.fixture(autouse=True)
def keep_logging() -> object:
    """main() reconfigures the root logger; give the next test the handlers pytest installed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def check(role: str, station: Path, data_dir: Path) -> int:
    return main([role, "--check", "--config", str(station), "--data-dir", str(data_dir)])


def test_recorder_check_passes_with_redis_database_and_data_dir(
    external_redis: str,
    postgres_schema_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("LINEWATCH_DATABASE_URL", postgres_schema_url)
    assert check("recorder", station_yaml(tmp_path, "health-ok", "0"), tmp_path / "data") == 0
    out = capsys.readouterr().out
    for what in ("redis", "database", "data dir"):
        assert f"ok   {what}:" in out


@pytest.mark.parametrize("missing", ["redis", "database"])
def test_recorder_check_fails_naming_what_is_unreachable(
    missing: str,
    external_redis: str,
    postgres_schema_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("LINEWATCH_DATABASE_URL", postgres_schema_url)
    if missing == "redis":
        monkeypatch.setenv("LINEWATCH_REDIS_URL", "redis://127.0.0.1:1/0")
    else:
        monkeypatch.setenv("LINEWATCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/test")
    assert check("recorder", station_yaml(tmp_path, "health-bad", "0"), tmp_path / "data") == 1
    err = capsys.readouterr().err
    assert f"FAIL {missing}:" in err and "127.0.0.1:1" in err
    assert "Traceback" not in err


def test_worker_check_fails_on_missing_weights_without_downloading(
    external_redis: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))
    station = station_yaml(tmp_path, "health-clip", "0")
    station.write_text(station.read_text() + "model: {backbone: 'open_clip:ViT-B-16/openai'}\n")
    assert check("worker", station, tmp_path / "data") == 1
    captured = capsys.readouterr()
    assert "FAIL weights of open_clip:ViT-B-16/openai" in captured.err
    assert "ok   references of health-clip: 3 images" in captured.out


def test_worker_check_passes_with_the_packaged_backbone(
    external_redis: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert check("worker", station_yaml(tmp_path, "health-packaged", "0"), tmp_path / "data") == 0
    assert "ok   weights of packaged:efficientnet-lite0: " in capsys.readouterr().out


def test_capture_check_leaves_live_cameras_to_the_capture(
    external_redis: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    station = station_yaml(tmp_path, "health-cam", "rtsp://user:secret@10.0.0.7/stream1")
    assert check("capture", station, tmp_path / "data") == 0
    out = capsys.readouterr().out
    assert "ok   camera of health-cam:" in out and "live: not opened here" in out
    assert "secret" not in out  # camera credentials stay out of healthcheck logs


def test_json_logs_carry_station_and_frame_ids(capsys: pytest.CaptureFixture) -> None:
    log_format.configure("INFO", "json", role="recorder")
    logging.getLogger("pipeline.recorder").error(
        "evidence not written: disk full", extra={"station": "line-1", "frame": "line-1:42"}
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "evidence not written: disk full"
    assert (line["level"], line["role"], line["station"], line["frame"]) == (
        "ERROR",
        "recorder",
        "line-1",
        "line-1:42",
    )
