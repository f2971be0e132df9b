"""Interim dashboard: station state, counts and the latest flagged defects from the real store.

The full dashboard (WebRTC live view, review queue, auth) is issue #6; this page shows only what
the pipeline really recorded — no placeholder numbers.
"""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.service import ServiceSettings
from pipeline import keys, streams
from pipeline.store.models import Defect
from pipeline.store.store import Store


def create_app(settings: ServiceSettings, redis_url: str, station_ids: list[str]) -> FastAPI:
    app = FastAPI(title="linewatch", version="0.1")
    store = Store.open(settings.effective_database_url)
    redis = streams.connect(redis_url, name="dashboard")
    data_dir = settings.data_dir.resolve()

    async def states() -> dict[str, dict[str, Any]]:
        out = {}
        for sid in station_ids:
            raw: Any = await redis.hgetall(keys.station_state(sid))
            out[sid] = {k.decode(): json.loads(v) for k, v in raw.items()} or {"state": "offline"}
        return out

    def latest_defects(limit: int = 12) -> list[Defect]:
        with Session(store.engine) as session:
            return list(session.scalars(select(Defect).order_by(Defect.id.desc()).limit(limit)))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/stations")
    async def api_stations() -> list[dict[str, Any]]:
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
    async def evidence(path: str) -> FileResponse:
        target = (data_dir / path).resolve()
        if not target.is_relative_to(data_dir / "evidence") or not target.is_file():
            raise HTTPException(status_code=404, detail="no such evidence file")
        return FileResponse(target)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return render_page(store.station_summary(), await states(), latest_defects())

    return app


def render_page(summaries: list, live: dict[str, dict[str, Any]], defects: list[Defect]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s.station_id)}</td><td>{html.escape(s.product)}</td>"
        f"<td class='{html.escape(str(live.get(s.station_id, {}).get('state', 'offline')))}'>"
        f"{html.escape(str(live.get(s.station_id, {}).get('state', 'offline')))}</td>"
        f"<td>{float(live.get(s.station_id, {}).get('fps', 0) or 0):.1f}</td>"
        f"<td>{s.inspections}</td><td>{s.flagged}</td><td>{s.unreviewed}</td>"
        f"<td>{s.last_captured_at or '—'}</td></tr>"
        for s in summaries
    )
    cards = "".join(
        f"<figure><img src='/evidence/{html.escape(d.heatmap_path or '')}' "
        f"alt='defect {d.station_id}:{d.seq}'>"
        f"<figcaption>{html.escape(d.station_id)}:{d.seq} · score {d.score:.2f} · "
        f"{html.escape(d.position_words or '')}</figcaption></figure>"
        for d in defects
        if d.heatmap_path
    )
    return PAGE.format(
        rows=rows or "<tr><td colspan=8>no station has reported yet</td></tr>",
        cards=cards or "<p>No flagged defects yet.</p>",
    )


PAGE = """<!doctype html><html><head><meta charset=utf-8><title>linewatch</title>
<meta http-equiv=refresh content=3>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;background:#111;color:#eee}}
table{{border-collapse:collapse}}td,th{{padding:.3rem .8rem;border-bottom:1px solid #333;text-align:left}}
.online{{color:#4c4}}.reconnecting{{color:#fc4}}.offline,.finished{{color:#f55}}
figure{{display:inline-block;margin:.4rem;width:300px}}img{{width:300px;border:1px solid #444}}
figcaption{{font-size:.8rem;color:#bbb}}</style></head><body>
<h1>linewatch</h1><h2>Stations</h2><table><tr><th>station</th><th>product</th><th>camera</th><th>fps</th>
<th>inspected</th><th>flagged</th><th>to review</th><th>last frame</th></tr>{rows}</table>
<h2>Latest flagged defects</h2>{cards}
<p style="color:#888">Interim page; live WebRTC view and review queue arrive with issue #6.</p>
</body></html>"""


def dashboard_main(
    settings: ServiceSettings, station_ids: list[str], redis_url: str, host: str, port: int
) -> int:
    import uvicorn

    uvicorn.run(create_app(settings, redis_url, station_ids), host=host, port=port, log_level="warning")
    return 0
