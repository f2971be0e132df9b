"""``linewatch run``'s supervisor: a worker child that crashes (SIGKILL) again and again is
restarted each time with a growing backoff, inspection resumes, and ``linewatch status`` and the
dashboard's problems say what happened."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline import keys
from pipeline.redis_server import embedded_url
from pipeline.store.errors import StoreError
from pipeline.store.store import Store
from tests.dashboards.conftest import free_port
from tests.faults.harness import REPO, plate_video, tiny_station

pytestmark = pytest.mark.slow

STATION = "sup-line"


def linewatch(*args: str, **kw: Any) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def wait_until(check: Any, timeout_s: float, what: str, proc: subprocess.Popen, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"linewatch run exited ({proc.returncode})\n{log.read_text()[-3000:]}")
        got = check()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{log.read_text()[-3000:]}")


def test_a_crashing_worker_is_restarted_with_backoff_and_reported(tmp_path: Path) -> None:
    plate_video(tmp_path / "line.avi", 100)
    station_file = tiny_station(tmp_path, STATION, "line.avi", fps=10)
    station_file.write_text(station_file.read_text().replace("loop: false", "loop: true"))
    data_dir = tmp_path / "d"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")},
        "LINEWATCH_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    common = ["--config", str(station_file), "--data-dir", str(data_dir)]
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen(
            linewatch("run", *common, "--port", str(free_port())),
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    r: redis.Redis | None = None
    try:
        socket_path = embedded_url(data_dir).removeprefix("unix://")
        wait_until(lambda: Path(socket_path).exists(), 60, "the embedded Redis", run, log)
        r = redis.Redis(unix_socket_path=socket_path)
        supervised = keys.supervised(socket.gethostname())

        def children() -> dict[str, dict[str, Any]]:
            raw: Any = r.hgetall(supervised)
            return {k.decode(): json.loads(v) for k, v in raw.items()}

        def inspections() -> int:
            with Store.open(f"sqlite:///{data_dir / 'linewatch.db'}") as store:
                try:
                    return store.count_inspections(STATION)
                except StoreError:  # not migrated yet: linewatch run is starting
                    return 0

        wait_until(lambda: inspections() >= 10, 120, "the first inspections", run, log)
        backoffs = []
        for kill in range(1, 4):
            old = children()["worker-cpu-0"]
            os.kill(old["pid"], signal.SIGKILL)

            def restarted(n: int = kill, old_pid: int = old["pid"]) -> dict[str, Any] | None:
                worker = children().get("worker-cpu-0", {})
                ok = worker.get("restarts") == n and worker.get("state") == "running"
                return worker if ok and worker.get("pid") != old_pid else None

            worker = wait_until(restarted, 30, f"restart {kill}", run, log)
            assert worker["last_exit"] == -signal.SIGKILL
            backoffs.append(worker["backoff_s"])
        assert backoffs == sorted(backoffs) and backoffs[-1] > backoffs[0]  # it waits longer each time

        # inspection resumes after the last restart
        resumed_from = inspections()
        wait_until(lambda: inspections() > resumed_from + 10, 90, "inspection to resume", run, log)

        # status and the problems list say what happened
        status = subprocess.run(
            linewatch("status", *common), env=env, cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stderr
        assert "worker-cpu-0 running (restarts 3, last exit -9)" in status.stdout, status.stdout
        assert "PROBLEM: worker-cpu-0 exited with code -9" in status.stdout
        report = json.loads(
            subprocess.run(
                linewatch("status", *common, "--json"), env=env, cwd=REPO, capture_output=True, timeout=60
            ).stdout
        )
        assert any("worker-cpu-0" in p["message"] for p in report["problems"])
    finally:
        if r is not None:
            r.close()
        run.send_signal(signal.SIGINT)
        try:
            code = run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
    assert code == 0, log.read_text()[-3000:]
