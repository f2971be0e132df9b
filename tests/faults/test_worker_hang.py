"""A model call that never returns (a hung GPU or library call): the worker gives up on it after
``hang_timeout_s``, reports the problem and exits for a restart; another worker takes its frames
over and every frame gets exactly one result.

The hang is injected by replacing ``Inspector.inspect`` with a call that blocks until the test
releases it; everything else (Redis, the worker loop, the CLI's exit path) is the real code.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from config.loader import load_station
from pipeline import keys, problems, streams
from pipeline.messages import ResultMessage
from pipeline.redis_server import start_embedded
from pipeline.roles import EXIT_HUNG
from tests.faults.harness import REPO, STATION, Assets, entries, frame_fields, pending_ids, wait_for
from workers.inspect_worker import InspectWorker, WorkerHung, WorkerOptions
from workers.station_loader import load_inspectors

FRAMES = 6


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return Assets(tmp_path_factory.mktemp("hang-assets"))


async def _put_frames(r: streams.Redis, count: int) -> None:
    await streams.ensure_group(r, keys.frames(STATION), keys.INSPECT_GROUP)
    for seq in range(1, count + 1):
        await streams.add(r, keys.frames(STATION), frame_fields(STATION, seq, seq), maxlen=None)


async def test_a_hung_model_call_ends_the_worker_and_another_takes_its_frames(
    assets: Assets, tmp_path: Path
) -> None:
    data_dir = assets.data_dir(tmp_path)
    station = load_station(assets.station_file)
    stuck = await asyncio.to_thread(load_inspectors, [station], data_dir, "cpu")
    healthy = await asyncio.to_thread(load_inspectors, [station], data_dir, "cpu")
    release = threading.Event()
    entered = threading.Event()

    def hang(items):  # what a stuck device call looks like from Python: it never returns
        entered.set()
        release.wait()
        return []

    stuck[STATION].inspect = hang  # type: ignore[method-assign]
    with start_embedded(data_dir) as server:
        r = streams.connect(server.url)
        stop = asyncio.Event()
        taker: asyncio.Task | None = None
        try:
            await _put_frames(r, FRAMES)
            options = WorkerOptions(hang_timeout_s=1.5, claim_idle_ms=800)
            worker = InspectWorker(r, stuck, "w-stuck", options)
            started = asyncio.get_running_loop().time()
            with pytest.raises(WorkerHung, match="w-stuck: a batch of 6 frames has been in the model"):
                await asyncio.wait_for(worker.run(stop), timeout=30)
            assert entered.is_set()
            assert asyncio.get_running_loop().time() - started < 10
            # the frames stay pending on the stuck consumer: nothing was acknowledged or published
            assert len(await pending_ids(r, keys.frames(STATION), keys.INSPECT_GROUP, "w-stuck")) == FRAMES
            assert await r.xlen(keys.results(STATION)) == 0
            reported = {p["name"]: p for p in await problems.current(r)}
            assert "in the model for 1.5 s" in reported["hung:w-stuck"]["message"]

            taker = asyncio.create_task(InspectWorker(r, healthy, "w-taker", options).run(stop))

            async def all_results() -> bool:
                if taker.done():
                    taker.result()
                return await r.xlen(keys.results(STATION)) >= FRAMES

            await wait_for(all_results, 60, "results of the stuck worker's frames")
            await asyncio.sleep(0.5)  # a duplicate would show up now
            results = [ResultMessage.from_fields(f) for _, f in await entries(r, keys.results(STATION))]
            assert sorted(res.seq for res in results) == list(range(1, FRAMES + 1))
            assert {res.worker for res in results} == {"w-taker"}
            assert not await pending_ids(r, keys.frames(STATION), keys.INSPECT_GROUP)
        finally:
            release.set()
            stop.set()
            if taker is not None:
                await asyncio.wait_for(asyncio.gather(taker, return_exceptions=True), timeout=30)
            await r.aclose()


_HUNG_WORKER = """
import sys, threading
from workers.inspector import Inspector
Inspector.inspect = lambda self, items: threading.Event().wait()  # a model call that never returns
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
async def test_the_worker_process_exits_with_its_hang_status(assets: Assets, tmp_path: Path) -> None:
    """Through ``linewatch worker``: the stuck thread would keep the interpreter from exiting,
    so the process leaves at once with EXIT_HUNG, which the supervisor restarts."""
    data_dir = assets.data_dir(tmp_path)
    with start_embedded(data_dir) as server:
        r = streams.connect(server.url)
        try:
            await _put_frames(r, 3)
            env = {
                **os.environ,
                "LINEWATCH_REDIS_URL": server.url,
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            }
            argv = ["worker", "--config", str(assets.station_file), "--data-dir", str(data_dir)]
            argv += ["--device", "cpu", "--hang-timeout", "2"]
            proc = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", _HUNG_WORKER, *argv],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == EXIT_HUNG, proc.stderr[-2000:]
            assert "has been in the model for 2 s" in proc.stderr
            assert "exiting for a restart" in proc.stderr
        finally:
            await r.aclose()
