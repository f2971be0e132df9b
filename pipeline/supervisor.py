"""Runs the roles of ``linewatch run`` as child processes; restarts crashed ones with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.cancelling import cancel_and_wait

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long is healthy again: its backoff resets
REPORT_EVERY_S = 5.0  # the children's states in Redis are refreshed this often (TTL: three times)
RESTART_PROBLEM_TTL_S = 600.0  # a restart stays on the dashboard this long


@dataclass
class Child:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff_s: float = 0.5
    last_exit: int | None = None
    history: list[tuple[float, int]] = field(default_factory=list)
    state: str = "starting"  # running, restarting (waiting out its backoff), stopped

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "pid": self.process.pid if self.process else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "backoff_s": self.backoff_s,
        }


class Supervisor:
    """Starts each child, restarts it when it exits unexpectedly, and on stop terminates all of them."""

    def __init__(
        self,
        children: list[Child],
        env: dict[str, str],
        grace_s: float = 10.0,
        redis_url: str | None = None,
    ) -> None:
        """With ``redis_url`` the children's states go to Redis (``linewatch status``, the dashboard)
        and every restart is raised as a problem."""
        self.children = children
        self.env = {**os.environ, **env}
        self.grace_s = grace_s
        self.stopping = asyncio.Event()
        self.redis_url = redis_url
        self._redis: Any = None
        self.host = socket.gethostname()
        # one report at a time, each taking its snapshot when it gets the lock: reports on separate
        # pooled connections could otherwise land out of order and a stale one (a child not yet
        # started, pid None) overwrite a newer one until the next periodic report
        self._report_lock = asyncio.Lock()

    async def _start(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(*child.argv, env=self.env)
        child.started_at = time.monotonic()
        child.state = "running"
        logger.info("started %s (pid %d)", child.name, child.process.pid)
        await self._report()

    async def _watch(self, child: Child) -> None:
        await self._start(child)
        while not self.stopping.is_set():
            assert child.process is not None
            code = await child.process.wait()
            if self.stopping.is_set():
                return
            ran = time.monotonic() - child.started_at
            child.last_exit = code
            child.history.append((time.time(), code))
            if ran > STABLE_AFTER_S:
                child.backoff_s = 0.5
            logger.error(
                "%s exited with %d after %.0fs; restarting in %.1fs", child.name, code, ran, child.backoff_s
            )
            child.state = "restarting"
            await self._report(
                child,
                f"{child.name} exited with code {code} after {ran:.0f} s; restarted "
                f"{child.restarts + 1} time(s), next start in {child.backoff_s:.1f} s",
            )
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that lands as its timeout fires, and this watcher would then start the child again
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(child.backoff_s):
                    await self.stopping.wait()
            if self.stopping.is_set():
                return
            child.backoff_s = min(MAX_BACKOFF_S, child.backoff_s * 2)
            child.restarts += 1
            await self._start(child)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        if self.redis_url:
            from pipeline import streams

            self._redis = streams.connect(self.redis_url, name="supervisor")
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        reporter = asyncio.create_task(self._report_loop())
        await self.stopping.wait()
        await self.shutdown()
        await cancel_and_wait([*watchers, reporter])  # the reporter writes to Redis: see cancelling
        for c in self.children:
            c.state = "stopped"
        await self._report()
        if self._redis is not None:
            await self._redis.aclose()

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            await self._report()

    async def _report(self, restarted: Child | None = None, problem: str = "") -> None:
        """Children's states (and a restart as a problem) to Redis; best effort: supervising goes on
        while Redis is away, and the next report catches up."""
        if self._redis is None:
            return
        from pipeline import keys, problems, streams

        key = keys.supervised(self.host)
        async with self._report_lock:
            mapping = {c.name: json.dumps(c.as_dict()) for c in self.children}
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.hset(key, mapping=mapping)
                    pipe.expire(key, round(3 * REPORT_EVERY_S))
                    await pipe.execute()
                if restarted is not None:
                    name = f"process:{self.host}:{restarted.name}"
                    await problems.report(
                        self._redis, name, problem, RESTART_PROBLEM_TTL_S, role="supervisor"
                    )
            except streams.TRANSIENT_ERRORS as e:
                logger.warning("could not report the children's states to Redis: %s", e)

    async def shutdown(self) -> None:
        """SIGTERM every child (they drain), wait up to the grace period, then SIGKILL the rest."""
        live = [c.process for c in self.children if c.process and c.process.returncode is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), timeout=self.grace_s)
        except TimeoutError:
            for p in live:
                if p.returncode is None:
                    logger.warning("pid %d did not stop in %.0fs; killing it", p.pid, self.grace_s)
                    p.kill()
            await asyncio.gather(*(p.wait() for p in live))


def linewatch_argv(*args: str) -> list[str]:
    """The command line of a linewatch sub-command in this same Python environment."""
    return [sys.executable, "-m", "pipeline.cli", *args]
