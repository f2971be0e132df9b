"""``linewatch status``: station state, stream lags, live processes and stored counts."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from redis import exceptions as redis_errors

from config.service import ServiceSettings
from config.station import StationConfig
from pipeline import keys, problems, streams
from workers.calibration import suspect_warning


async def collect(redis_url: str, stations: list[StationConfig]) -> dict:
    r = streams.connect(redis_url, name="status")
    try:
        out: dict = {
            "stations": {},
            "workers": await streams.alive(r, "worker"),
            "recorders": await streams.alive(r, "recorder"),
            "counters": await streams.counters(r),
            "explainers": await streams.alive(r, "explain"),
            "processes": await supervised(r),
            "problems": await problems.current(r),
        }
        for s in stations:
            raw: Any = await r.hgetall(keys.station_state(s.id))
            state = {k.decode(): json.loads(v) for k, v in raw.items()} or {"state": "offline"}
            lags: dict[str, int | None] = {}
            for name, stream, group in (
                ("inspect_lag", keys.frames(s.id), keys.INSPECT_GROUP),
                ("record_lag", keys.results(s.id), keys.RECORD_GROUP),
                ("explain_lag", keys.flagged(s.id), keys.EXPLAIN_GROUP),  # the LLM backlog
            ):
                try:
                    lags[name] = await streams.lag(r, stream, group)
                except LookupError:
                    lags[name] = None
            model: Any = await r.get(keys.station_model(s.id))
            out["stations"][s.id] = {
                **state,
                **lags,
                # what the worker loaded (threshold, references that score like defects); None
                # until a worker has loaded the station
                "model": json.loads(model) if model else None,
                "frames_in_stream": await r.xlen(keys.frames(s.id)),
                "flagged_in_stream": await r.xlen(keys.flagged(s.id)),
            }
        return out
    finally:
        await r.aclose()


async def supervised(r: streams.Redis) -> dict[str, dict[str, Any]]:
    """host -> child -> state, of every `linewatch run` that reported in the last seconds."""
    out: dict[str, dict[str, Any]] = {}
    prefix = keys.supervised("")
    async for key in r.scan_iter(match=prefix + "*", count=500):
        name = key.decode() if isinstance(key, bytes) else key
        raw: Any = await r.hgetall(name)
        out[name[len(prefix) :]] = {k.decode(): json.loads(v) for k, v in raw.items()}
    return out


def render(report: dict, summaries: dict) -> str:
    lines = [
        f"workers alive: {', '.join(report['workers']) or 'none'}",
        f"recorders alive: {', '.join(report['recorders']) or 'none'}",
    ]
    if report.get("explainers"):
        lines.append(f"explainers alive: {', '.join(report['explainers'])}")
    for host, kids in report.get("processes", {}).items():
        lines.append(
            f"processes on {host}: "
            + ", ".join(
                f"{c['name']} {c['state']}"
                + (f" (restarts {c['restarts']}, last exit {c['last_exit']})" if c["restarts"] else "")
                for c in kids.values()
            )
        )
    for p in report.get("problems", []):
        since = time.strftime("%H:%M:%S", time.localtime(p["first_at"]))
        lines.append(f"PROBLEM: {p['message']} (since {since}, {p['count']} time(s))")
    for sid, st in report["stations"].items():
        db = summaries.get(sid)
        lines.append(
            f"{sid}: camera {st.get('state')} fps {float(st.get('fps') or 0):.1f} "
            f"frames {st.get('frames', 0)} dropped {st.get('dropped', 0)} "
            f"reconnects {st.get('reconnects', 0)} | "
            f"inspect lag {st['inspect_lag']} record lag {st['record_lag']} "
            + (f"explain lag {st['explain_lag']} " if st.get("explain_lag") is not None else "")
            + "| "
            + (
                f"stored {db.inspections} flagged {db.flagged} to review {db.unreviewed}"
                if db
                else "stored 0"
            )
        )
        suspects = (st.get("model") or {}).get("suspect_references") or []
        if suspects:
            lines.append(f"WARNING: {suspect_warning(sid, suspects)} (/stations/{sid})")
    dead = {k: v for k, v in report["counters"].items() if v}
    if dead:
        lines.append("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(dead.items())))
    return "\n".join(lines)


def status_main(
    settings: ServiceSettings, stations: list[StationConfig], redis_url: str, as_json: bool
) -> int:
    from pipeline.store.store import Store

    try:
        report = asyncio.run(asyncio.wait_for(collect(redis_url, stations), timeout=10))
    except (ConnectionError, TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError) as e:
        print(
            f"linewatch status: Redis at {redis_url} is unreachable ({e}); is `linewatch run` "
            "(or the Redis server of LINEWATCH_REDIS_URL) running?",
            file=sys.stderr,
        )
        return 1
    with Store.open(settings.effective_database_url) as store:
        summaries = {s.station_id: s for s in store.station_summary()}
    if as_json:
        report["stored"] = {
            k: {"inspections": v.inspections, "flagged": v.flagged} for k, v in summaries.items()
        }
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report, summaries))
    return 0
