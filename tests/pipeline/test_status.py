"""``linewatch status``: a clear message when nothing runs, real numbers when something does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.service import load_settings
from pipeline import keys
from pipeline.redis_server import start_embedded
from pipeline.status import status_main
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.pipeline.store.factories import make_result


class _Station:
    def __init__(self, sid: str) -> None:
        self.id = sid


def test_status_without_redis_says_what_to_start(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    settings = load_settings(data_dir=tmp_path)
    upgrade(settings.effective_database_url)
    code = status_main(settings, [_Station("line-1")], f"unix://{tmp_path}/nothing.sock", as_json=False)  # type: ignore[list-item]
    err = capsys.readouterr().err
    assert code == 1
    assert "unreachable" in err and "linewatch run" in err and "Traceback" not in err


def test_status_reports_state_lag_and_stored_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    settings = load_settings(data_dir=tmp_path)
    upgrade(settings.effective_database_url)
    with Store.open(settings.effective_database_url) as store:
        store.record([make_result("line-1", 1), make_result("line-1", 2, flagged=True)])
    with start_embedded(tmp_path / "r") as server:
        import redis

        sync = redis.Redis.from_url(server.url)
        sync.hset(
            keys.station_state("line-1"), mapping={"state": json.dumps("online"), "fps": json.dumps(4.8)}
        )
        # what publish_models writes when a worker loads a station whose third reference is odd
        model = {"threshold": 0.3, "normal_scores": [0.21, 0.24, 0.41, 0.2], "suspect_references": [2]}
        sync.set(keys.station_model("line-1"), json.dumps(model))
        sync.close()
        code = status_main(settings, [_Station("line-1")], server.url, as_json=False)  # type: ignore[list-item]
    out = capsys.readouterr().out
    assert code == 0
    assert "line-1: camera online fps 4.8" in out
    assert "stored 2 flagged 1" in out
    assert "WARNING: station line-1: reference(s) 3 (in file-name order) score at or above" in out
