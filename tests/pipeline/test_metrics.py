"""Metrics: capture counters from the reported state, per-role ports, queue metrics read from Redis
(the numbers `linewatch status` shows), and a role serving them over HTTP as a process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from config.loader import load_station
from config.service import load_settings
from pipeline import keys, metrics, streams
from pipeline.demo_assets import render_part
from pipeline.errors import PipelineError
from pipeline.status import collect
from pipeline.stream_metrics import StreamStateCollector
from tests.faults.harness import REPO, frame_fields
from tests.pipeline.redis_fixtures import EXTERNAL_URL, RedisTarget, _external_or_skip, r, redis_target
from tests.pipeline.test_scaling import free_port, scrape

__all__ = ["r", "redis_target"]


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_capture_counters_follow_the_reported_state_and_survive_a_restart() -> None:
    sid = "metrics-capture"
    counters = metrics.CaptureCounters(sid)
    before = sample("linewatch_frames_captured_total", station=sid)
    counters.update({"state": "online", "fps": 4.5, "frames": 10, "dropped": 2, "reconnects": 0})
    counters.update({"state": "reconnecting", "fps": 0.0, "frames": 15, "dropped": 3, "reconnects": 1})
    assert sample("linewatch_frames_captured_total", station=sid) - before == 15
    assert sample("linewatch_frames_dropped_total", station=sid) == 3
    assert sample("linewatch_camera_online", station=sid) == 0
    counters.update({"state": "online", "fps": 5.0, "frames": 4, "dropped": 0})  # capture restarted
    assert sample("linewatch_frames_captured_total", station=sid) - before == 19
    assert sample("linewatch_capture_fps", station=sid) == 5.0
    assert sample("linewatch_camera_online", station=sid) == 1


@pytest.mark.parametrize(
    ("role", "device", "port"),
    [("capture", None, 9400), ("recorder", None, 9401), ("dashboard", None, 9402),
     ("explain", None, 9403), ("worker", "cpu", 9404), ("worker", "cuda:0", 9404),
     ("worker", "cuda:3", 9407), ("worker", "cuda", 9404)],
)  # fmt: skip
def test_each_role_has_its_own_port_from_one_base(role: str, device: str | None, port: int) -> None:
    assert metrics.port_for(role, 9400, device) == port


def test_port_beyond_range_is_a_clear_error() -> None:
    with pytest.raises(PipelineError, match="metrics port 65539 of worker"):
        metrics.port_for("worker", 65535, "cpu")


def station_yaml(root: Path, sid: str, source: str, fps: int = 5) -> Path:
    """A station whose references (and image-folder source, if any) are rendered demo parts."""
    for folder in ("refs", "frames"):
        (root / folder).mkdir(exist_ok=True)
        for i in range(3):
            cv2.imwrite(str(root / folder / f"p{i}.png"), render_part(i)[0])
    path = root / f"{sid}.yaml"
    path.write_text(
        f"id: {sid}\ncamera: {{source: '{source}', fps: {fps}}}\n"
        "product: {name: plate}\nreferences: {folder: refs}\n"
    )
    return path


def families(collector: StreamStateCollector) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


async def test_queue_metrics_are_the_numbers_status_reports(
    r: streams.Redis, redis_target: RedisTarget, tmp_path: Path
) -> None:
    sid = f"{redis_target.prefix}-q"
    station = load_station(station_yaml(tmp_path, sid, "0"))
    frames = keys.frames(sid)
    try:
        await streams.ensure_group(r, frames, keys.INSPECT_GROUP)
        for seq in range(5):
            await streams.add(r, frames, frame_fields(sid, seq, 0), maxlen=None)
        taken = await streams.read_batch(r, keys.INSPECT_GROUP, "c1", [frames], 2, 10)
        await streams.dead_letter(r, frames, keys.INSPECT_GROUP, taken[0], "test")
        await streams.heartbeat(r, "worker", f"{redis_target.prefix}-w", 30)

        got = await asyncio.to_thread(families, StreamStateCollector(redis_target.url, [station]))
        report = await collect(redis_target.url, [station])
        st = report["stations"][sid]
        assert got["linewatch_redis_up{}"] == 1
        assert got[f"linewatch_stream_length{{station={sid},stream=frames}}"] == st["frames_in_stream"] == 5
        assert got[f"linewatch_consumer_lag{{group=inspect,station={sid}}}"] == st["inspect_lag"]
        if redis_target.kind == "external":  # Redis 7 counts the lag; 6.2 (embedded) estimates it
            assert st["inspect_lag"] == 3
        assert f"linewatch_consumer_lag{{group=record,station={sid}}}" not in got  # no recorder group yet
        assert got["linewatch_processes_alive{role=worker}"] == len(report["workers"]) >= 1
        assert got[f"linewatch_dead_letters_total{{stream={frames}}}"] == 1
    finally:
        await r.delete(frames, keys.dead_letter(frames), keys.heartbeat("worker", f"{redis_target.prefix}-w"))
        await r.hdel(keys.counters(), streams.counter_field("dead", frames))


def test_queue_metrics_say_when_redis_is_down(tmp_path: Path) -> None:
    got = families(StreamStateCollector(f"unix://{tmp_path}/no-redis.sock", [], timeout_s=2))
    assert got == {"linewatch_redis_up{}": 0}


def role_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.mark.slow
def test_capture_process_serves_its_metrics_and_a_taken_port_is_an_error(tmp_path: Path) -> None:
    """`linewatch capture` with LINEWATCH_METRICS_PORT serves on base + 0; a second one on the same
    port exits 2 naming the port instead of running without metrics."""
    _external_or_skip().close()
    sid = f"metrics-{os.getpid()}"
    yaml = station_yaml(tmp_path, sid, "frames", fps=20)
    port = free_port()
    env = role_env(LINEWATCH_REDIS_URL=EXTERNAL_URL, LINEWATCH_METRICS_PORT=str(port))
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "capture",
        "--config",
        str(yaml),
        "--data-dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = 60.0
        samples: dict[str, float] = {}
        while deadline > 0:
            assert proc.poll() is None, proc.stdout and proc.stdout.read().decode()
            try:
                samples = scrape(port)
                if samples.get(f'linewatch_frames_captured_total{{station="{sid}"}}', 0) >= 3:
                    break
            except OSError:
                pass
            deadline -= 0.25
            time.sleep(0.25)
        assert samples[f'linewatch_frames_captured_total{{station="{sid}"}}'] == 3
        assert samples[f'linewatch_frames_dropped_total{{station="{sid}"}}'] == 0  # recorded: never drops
        second = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"cannot serve capture metrics on 0.0.0.0:{port}" in second.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        client = redis.Redis.from_url(EXTERNAL_URL)
        client.delete(keys.frames(sid), keys.last_seq(sid), keys.station_state(sid))
        client.srem(keys.stations_set(), sid)
        client.close()


def test_metrics_port_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.errors import ConfigError

    monkeypatch.setenv("LINEWATCH_METRICS_PORT", "70000")
    with pytest.raises(ConfigError, match="LINEWATCH_METRICS_PORT"):
        load_settings()
    monkeypatch.setenv("LINEWATCH_METRICS_PORT", "")
    assert load_settings().metrics_port is None
