"""Station pages: configuration (read-only), reference images, the loaded model and its threshold,
counts and the defect rate per hour over the last day."""

from __future__ import annotations

import asyncio
import html
import json
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy import select

from config.station import StationConfig
from dashboards.auth import Sessions, Viewer
from dashboards.review import login_redirect
from dashboards.review_page import STATION_PAGE
from pipeline import keys
from pipeline.store.models import Station
from pipeline.store.store import Store
from pipeline.streams import Redis

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def reference_files(config: StationConfig | None) -> list[Path]:
    """The station's reference images (those in its folder; the worker uses the first k)."""
    if config is None or config.references is None or not config.references.folder.is_dir():
        return []
    folder = config.references.folder
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def router(store: Store, redis: Redis, sessions: Sessions, configs: dict[str, StationConfig]) -> APIRouter:
    api = APIRouter()

    def stored_config(station_id: str) -> str:
        with store._transaction(f"reading station {station_id}", write=False) as session:
            row = session.scalars(select(Station.config_yaml).where(Station.id == station_id)).first()
        if row is None:
            raise HTTPException(404, f"no station {station_id!r}")
        try:  # stored as JSON by the recorder; shown as the YAML people write
            return yaml.safe_dump(json.loads(row), sort_keys=False, allow_unicode=True) if row else ""
        except ValueError:
            return row

    @api.get("/api/stations/{station_id}")
    async def station(station_id: str, _: Viewer) -> dict[str, Any]:
        """Configuration, counts, the loaded model with its calibration, and 24 hourly counts."""
        config = await asyncio.to_thread(stored_config, station_id)
        summary = next((s for s in store.station_summary() if s.station_id == station_id), None)
        raw: Any = await redis.get(keys.station_model(station_id))
        hourly = await asyncio.to_thread(store.hourly_counts, station_id, 24)
        refs = reference_files(configs.get(station_id))
        settings = configs[station_id].references if station_id in configs else None
        k = settings.k if settings is not None else 0
        return {
            "station": station_id,
            "config_yaml": config,
            "summary": None
            if summary is None
            else {
                **summary.__dict__,
                "last_captured_at": summary.last_captured_at and summary.last_captured_at.isoformat(),
            },
            "model": json.loads(raw) if raw else None,
            "hourly": hourly,
            "references": [{"name": p.name, "used": i < k} for i, p in enumerate(refs)],
        }

    @api.get("/stations/{station_id}/references/{name}", include_in_schema=False)
    async def reference(station_id: str, name: str, _: Viewer) -> FileResponse:
        for path in reference_files(configs.get(station_id)):
            if path.name == name:  # only names listed from the folder: no path ever built from input
                return FileResponse(path)
        raise HTTPException(404, "no such reference image")

    @api.get("/stations/{station_id}", response_class=HTMLResponse, include_in_schema=False)
    async def station_page(station_id: str, request: Request) -> Any:
        if sessions.page(request) is None:
            return login_redirect(request)
        return STATION_PAGE.replace("{station}", html.escape(station_id))

    return api
