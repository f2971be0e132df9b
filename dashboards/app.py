"""The dashboard: live WebRTC overlays per station, station state and counts, latest defects.

Everything shown comes from what the pipeline really recorded — no placeholder numbers. Every
page and API route needs a login (viewer and above; reviewing needs an operator); only /healthz
and the login itself are open. Still to come (issue #6): history, station pages, API tokens.
"""

from __future__ import annotations

import html
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.service import ServiceSettings
from config.station import StationConfig
from dashboards import admin, review, stations, webrtc
from dashboards.auth import LoginThrottle, Sessions, Viewer, secret_key
from dashboards.limits import BodyLimit
from dashboards.live_page import LIVE_PAGE
from dashboards.webrtc import LiveView
from pipeline import keys, problems, streams
from pipeline.store.errors import StoreUnavailable, StoreValueError
from pipeline.store.models import Defect
from pipeline.store.store import Store


def create_app(
    settings: ServiceSettings,
    redis_url: str,
    station_ids: list[str],
    configs: dict[str, StationConfig] | None = None,
) -> FastAPI:
    store = Store.open(settings.effective_database_url)
    redis = streams.connect(redis_url, name="dashboard")
    data_dir = settings.data_dir.resolve()
    live = LiveView(redis, station_ids, settings.live_height, settings.live_fps, settings.ice_servers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await live.shutdown()

    sessions = Sessions(secret_key(settings.data_dir, settings.secret_key), settings.secure_cookies, store)

    app = FastAPI(title="linewatch", version="0.1", lifespan=lifespan)
    app.add_middleware(BodyLimit)  # no route takes more than a few kB; refuse before reading more
    app.state.sessions = sessions

    @app.exception_handler(StoreUnavailable)
    async def database_away(_: Request, e: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"detail": f"database unavailable, try again shortly ({e})"}, status_code=503)

    @app.exception_handler(StoreValueError)
    async def refused_value(_: Request, e: StoreValueError) -> JSONResponse:
        # e.g. a NUL character in a name, note or filter: PostgreSQL text cannot hold it
        return JSONResponse({"detail": f"a value the database cannot store: {e}"}, status_code=422)

    app.include_router(webrtc.router(live))
    app.include_router(review.router(store, sessions, LoginThrottle()))
    app.include_router(stations.router(store, redis, sessions, configs or {}))
    app.include_router(admin.router(store, sessions))
    app.state.live = live

    async def states() -> dict[str, dict[str, Any]]:
        out = {}
        for sid in station_ids:
            raw: Any = await redis.hgetall(keys.station_state(sid))
            out[sid] = {k.decode(): json.loads(v) for k, v in raw.items()} or {"state": "offline"}
        return out

    def latest_defects(limit: int = 12) -> list[Defect]:
        with Session(store.engine) as session:
            return list(session.scalars(select(Defect).order_by(Defect.id.desc()).limit(limit)))

    @app.get("/metrics", include_in_schema=False)
    async def metrics(_: Viewer) -> Response:
        """This process's Prometheus metrics (scrape with an API token as bearer)."""
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/stations")
    async def api_stations(_: Viewer) -> list[dict[str, Any]]:
        live = await states()
        return [
            {
                **s.__dict__,
                "last_captured_at": s.last_captured_at and s.last_captured_at.isoformat(),
                "capture": live.get(s.station_id, {}),
            }
            for s in store.station_summary()
        ]

    @app.get("/evidence/{path:path}")
    async def evidence(path: str, _: Viewer) -> FileResponse:
        target = (data_dir / path).resolve()
        if not target.is_relative_to(data_dir / "evidence") or not target.is_file():
            raise HTTPException(status_code=404, detail="no such evidence file")
        return FileResponse(target)

    @app.get("/parts/summary", response_class=HTMLResponse)
    async def summary_part(_: Viewer) -> str:
        """The station table and latest defects, refreshed by the live page without a reload."""
        return render_summary(
            store.station_summary(), await states(), latest_defects(), await problems.current(redis)
        )

    @app.get("/api/problems")
    async def api_problems(_: Viewer) -> list[dict[str, Any]]:
        """What operators must know: evidence not writable, processes restarting, …"""
        return await problems.current(redis)

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> Any:
        found = sessions.page(request)
        if found is None:
            return RedirectResponse("/login", status_code=303)
        user, csrf = found
        cards = "".join(
            f"<article class=station data-station='{html.escape(sid)}'><h3>{html.escape(sid)} "
            f"<span class=state>…</span></h3><video autoplay muted playsinline></video>"
            f"<p class=last>waiting for inspections</p></article>"
            for sid in station_ids
        )
        summary = render_summary(
            store.station_summary(), await states(), latest_defects(), await problems.current(redis)
        )
        page = LIVE_PAGE.replace("{cards}", cards).replace("{summary}", summary)
        return page.replace("{csrf}", html.escape(csrf)).replace("{user}", html.escape(user.username))

    return app


def render_summary(
    summaries: list,
    live: dict[str, dict[str, Any]],
    defects: list[Defect],
    issues: list[dict[str, Any]] | None = None,
) -> str:
    alerts = "".join(
        f"<p class=problem role=alert>⚠ {html.escape(str(p.get('message', '')))} "
        f"<small>since {time.strftime('%H:%M:%S', time.localtime(float(p.get('first_at', 0))))}, "
        f"{int(p.get('count', 1))} time(s)</small></p>"
        for p in issues or []
    )
    rows = "".join(
        f"<tr><td><a href='/stations/{html.escape(s.station_id)}'>{html.escape(s.station_id)}</a></td>"
        f"<td>{html.escape(s.product)}</td>"
        f"<td class='{html.escape(str(live.get(s.station_id, {}).get('state', 'offline')))}'>"
        f"{html.escape(str(live.get(s.station_id, {}).get('state', 'offline')))}</td>"
        f"<td>{float(live.get(s.station_id, {}).get('fps', 0) or 0):.1f}</td>"
        f"<td>{s.inspections}</td><td>{s.flagged}</td><td>{s.unreviewed}</td>"
        f"<td>{s.last_captured_at or '—'}</td></tr>"
        for s in summaries
    )
    cards = "".join(
        f"<figure><img src='/evidence/{html.escape(d.heatmap_path or '')}' "
        f"alt='defect {html.escape(d.station_id)}:{d.seq}'>"
        f"<figcaption>{html.escape(d.station_id)}:{d.seq} · score {d.score:.2f} · "
        f"{html.escape(d.position_words or '')}</figcaption></figure>"
        for d in defects
        if d.heatmap_path
    )
    return alerts + SUMMARY.format(
        rows=rows or "<tr><td colspan=8>no station has reported yet</td></tr>",
        cards=cards or "<p>No flagged defects yet.</p>",
    )


SUMMARY = """<h2>Stations</h2><table><tr><th>station</th><th>product</th><th>camera</th><th>fps</th>
<th>inspected</th><th>flagged</th><th>to review</th><th>last frame</th></tr>{rows}</table>
<h2>Latest flagged defects</h2>{cards}"""


def dashboard_main(
    settings: ServiceSettings, station_list: list[StationConfig], redis_url: str, host: str, port: int
) -> int:
    import uvicorn

    from pipeline.store.users import ensure_first_admin

    with Store.open(settings.effective_database_url) as store:
        created = ensure_first_admin(store, settings.data_dir)
    if created is not None:
        print(f"dashboard: first user 'admin', password in {created}", file=sys.stderr, flush=True)
    configs = {s.id: s for s in station_list}
    app = create_app(settings, redis_url, list(configs), configs)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
