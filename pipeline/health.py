"""``linewatch <role> --check``: are the role's dependencies there? Exit 0 if so, 1 if not.

Meant for container healthchecks and for a person setting up a host: each check prints one line
(``ok``/``FAIL``, what, where or why). Checks are cheap enough to run every 30 s: they connect
and look, they never load a model or open a camera stream.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config.service import ServiceSettings
from config.station import StationConfig

CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    ok: bool
    what: str
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what}: {self.detail}"


def redis_check(url: str) -> Check:
    import redis

    from pipeline.sources import redact_url

    client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT_S, socket_timeout=CHECK_TIMEOUT_S)
    try:
        client.ping()
        return Check(True, "redis", redact_url(url))
    except redis.RedisError as e:
        return Check(False, "redis", f"{redact_url(url)} does not answer: {e}")
    finally:
        client.close()


def database_check(url: str) -> Check:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.store import make_engine

    shown = make_url(url).render_as_string(hide_password=True)
    is_pg = url.startswith("postgresql")
    engine = make_engine(url, connect_args={"connect_timeout": int(CHECK_TIMEOUT_S)} if is_pg else {})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return Check(True, "database", shown)
    except SQLAlchemyError as e:
        return Check(False, "database", f"{shown} does not answer: {str(e).splitlines()[0]}")
    finally:
        engine.dispose()


def data_dir_check(data_dir: Path) -> Check:
    """The data dir must take files: evidence (recorder) and cached banks (worker) go there."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".check-"):
            pass
        return Check(True, "data dir", str(data_dir))
    except OSError as e:
        return Check(False, "data dir", f"{data_dir} is not writable: {e.strerror or e}")


def source_checks(stations: list[StationConfig]) -> list[Check]:
    """Recorded sources (files, folders, globs) must be there; live cameras are the capture's to retry."""
    from pipeline.errors import SourceError
    from pipeline.sources import make_source

    out = []
    for s in stations:
        what = f"camera of {s.id}"
        try:
            source = make_source(s.camera.source)  # checks paths and globs, opens nothing
        except SourceError as e:
            out.append(Check(False, what, str(e)))
            continue
        # a live camera may be rebooting: the capture retries it and reports it offline meanwhile
        note = " (live: not opened here)" if source.live else ""
        out.append(Check(True, what, source.describe() + note))
    return out


def weights_checks(stations: list[StationConfig]) -> list[Check]:
    from workers.errors import WorkerError
    from workers.weights import weights_location

    out = []
    for spec in sorted({s.model.backbone for s in stations}):
        try:
            out.append(Check(True, f"weights of {spec}", weights_location(spec)))
        except WorkerError as e:
            out.append(Check(False, f"weights of {spec}", str(e)))
    return out


def reference_checks(stations: list[StationConfig]) -> list[Check]:
    from workers.station_loader import reference_files

    out = []
    for s in stations:
        refs = s.references
        if refs is None:  # a zero-shot station (issue 4) has no reference images
            continue
        try:
            n = len(reference_files(s))
        except (OSError, ValueError) as e:
            out.append(Check(False, f"references of {s.id}", str(e)))
            continue
        out.append(Check(n > 0, f"references of {s.id}", f"{n} images in {refs.folder}"))
    return out


def role_checks(
    role: str, settings: ServiceSettings, stations: list[StationConfig], redis_url: str
) -> list[Callable[[], list[Check]]]:
    """What ``role`` needs, as deferred checks; a role not listed here needs Redis at least."""
    redis = [lambda: [redis_check(redis_url)]]
    db = [lambda: [database_check(settings.effective_database_url)]]
    disk = [lambda: [data_dir_check(settings.data_dir)]]
    by_role: dict[str, list[Callable[[], list[Check]]]] = {
        "capture": [*redis, lambda: source_checks(stations)],
        "worker": [*redis, *disk, lambda: weights_checks(stations), lambda: reference_checks(stations)],
        "recorder": [*redis, *db, *disk],
        "dashboard": [*redis, *db],
    }
    return by_role.get(role, redis)


def run_checks(role: str, settings: ServiceSettings, stations: list[StationConfig], redis_url: str) -> int:
    """Print one line per check; 0 when all pass, else 1."""
    results = [c for check in role_checks(role, settings, stations, redis_url) for c in check()]
    for c in results:
        print(f"linewatch {role} --check: {c.line()}", file=sys.stdout if c.ok else sys.stderr)
    return 0 if all(c.ok for c in results) else 1
