"""Runs the roles of ``linewatch run`` as child processes; restarts crashed ones with backoff."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long is healthy again: its backoff resets


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


class Supervisor:
    """Starts each child, restarts it when it exits unexpectedly, and on stop terminates all of them."""

    def __init__(self, children: list[Child], env: dict[str, str], grace_s: float = 10.0) -> None:
        self.children = children
        self.env = {**os.environ, **env}
        self.grace_s = grace_s
        self.stopping = asyncio.Event()

    async def _start(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(*child.argv, env=self.env)
        child.started_at = time.monotonic()
        logger.info("started %s (pid %d)", child.name, child.process.pid)

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
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=child.backoff_s)
                return
            except TimeoutError:
                pass
            child.backoff_s = min(MAX_BACKOFF_S, child.backoff_s * 2)
            child.restarts += 1
            await self._start(child)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        await self.stopping.wait()
        await self.shutdown()
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

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
