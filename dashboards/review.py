"""Logging in, the review queue and its JSON API: operators confirm or reject flagged defects."""

from __future__ import annotations

import asyncio
import csv
import html
import io
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as FastApiPath
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from dashboards.auth import LoginThrottle, OperatorWrite, Sessions, Viewer, ViewerWrite
from dashboards.review_page import HISTORY_PAGE, LOGIN_PAGE, REVIEW_PAGE
from pipeline.store import reviews
from pipeline.store.models import REVIEW_STATES
from pipeline.store.store import Store
from pipeline.store.users import authenticate

#: database ids are 64-bit: larger numbers are refused as invalid input, not passed to the driver
MAX_ID = 2**63 - 1
DefectId = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, FastApiPath(ge=1, le=MAX_ID)]


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class SessionInfo(BaseModel):
    username: str
    role: str
    csrf: str


class DefectFilter:
    """Query filters shared by the defect list, the CSV export and the history page."""

    def __init__(
        self,
        state: Literal["unreviewed", "confirmed", "rejected"] | None = None,
        station: str | None = Query(default=None, max_length=64),
        since: datetime | None = None,
        until: datetime | None = None,
        min_score: float | None = Query(default=None, ge=0, le=1),
        defect_type: str | None = Query(default=None, max_length=100),
    ) -> None:
        self.state, self.station = state, station
        self.since, self.until = aware("since", since), aware("until", until)
        self.min_score, self.defect_type = min_score, defect_type

    def as_kwargs(self) -> dict[str, Any]:
        return dict(vars(self))


def aware(name: str, when: datetime | None) -> datetime | None:
    """``when`` as an aware UTC time; 422 for a time without a zone (whose zone would be a guess:
    the line's, the server's?) or one outside what UTC can hold (year 1 at +05:00)."""
    if when is None:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        raise HTTPException(
            422, f"{name} needs a time zone, e.g. {when.isoformat()}Z or {when.isoformat()}+01:00"
        )
    try:
        return when.astimezone(UTC)
    except OverflowError as e:
        raise HTTPException(422, f"{name} {when.isoformat()} is out of range") from e


#: a spreadsheet runs a cell starting with one of these as a formula (CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula, quoted with a leading apostrophe (OWASP);
    numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


CSV_COLUMNS = (
    "id", "station", "seq", "captured_at", "score", "position", "review_state", "defect_type",
    "note", "reviewed_by", "reviewed_at", "llm_status", "llm_anomaly", "llm_defect_type",
    "llm_location", "llm_confidence", "evidence",
)  # fmt: skip


def to_csv(items: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for d in items:
        v = d["verdict"]
        writer.writerow(
            cell(x)
            for x in [
                d["id"], d["station"], d["seq"], d["captured_at"], f"{d['score']:.4f}", d["position"],
                d["review_state"], d["defect_type"] or "", d["note"] or "", d["reviewed_by"] or "",
                d["reviewed_at"] or "", v["status"], "" if v["anomaly"] is None else v["anomaly"],
                v["defect_type"] or "", v["location"] or "",
                "" if v["confidence"] is None else v["confidence"], d["evidence"] or "",
            ]
        )  # fmt: skip
    return buffer.getvalue()


class Decision(BaseModel):
    """An operator's decision on one defect."""

    decision: Literal["confirmed", "rejected"]
    defect_type: str | None = Field(default=None, max_length=100)
    note: str | None = Field(default=None, max_length=2000)


class BulkDecision(Decision):
    ids: list[DefectId] = Field(min_length=1, max_length=200)


def login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)


def router(store: Store, sessions: Sessions, throttle: LoginThrottle) -> APIRouter:
    api = APIRouter()

    @api.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_page() -> str:
        return LOGIN_PAGE

    @api.post("/api/login", response_model=SessionInfo)
    async def login(body: Login, request: Request, response: Response) -> SessionInfo:
        """Check name and password; a fresh session cookie on success."""
        key = (request.client.host if request.client else "?", body.username)
        # counted before the (slow) password check, so parallel guesses cannot all slip through
        # before the first failure is recorded; a correct password takes its attempt back
        wait = throttle.attempt(key)
        if wait > 0:
            raise HTTPException(429, "too many failed logins; try later", {"Retry-After": str(int(wait) + 1)})
        user = await asyncio.to_thread(authenticate, store, body.username, body.password)
        if user is None:
            raise HTTPException(401, "wrong user name or password")
        throttle.succeeded(key)
        csrf = sessions.issue(response, user)
        return SessionInfo(username=user.username, role=user.role, csrf=csrf)

    @api.post("/api/logout", status_code=204)
    async def logout(request: Request, response: Response, _: ViewerWrite) -> None:
        await asyncio.to_thread(sessions.revoke, request)
        sessions.clear(response)

    @api.get("/api/session", response_model=SessionInfo)
    async def session_info(request: Request, user: Viewer) -> SessionInfo:
        """Who is asking, with the session's CSRF token (empty for API-token clients)."""
        found = sessions.read(request)
        return SessionInfo(username=user.username, role=user.role, csrf=found[1] if found else "")

    @api.get("/api/defects")
    async def list_defects(
        _: Viewer,
        filters: Annotated[DefectFilter, Depends()],
        limit: int = Query(default=50, ge=1, le=200),
        offset: int = Query(default=0, ge=0, le=MAX_ID),
    ) -> dict[str, Any]:
        """Flagged defects, newest first, with the detector's and the explainer's verdicts."""
        total, items = await asyncio.to_thread(
            reviews.list_defects, store, **filters.as_kwargs(), limit=limit, offset=offset
        )
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    @api.get("/api/defects.csv")
    async def export_defects(_: Viewer, filters: Annotated[DefectFilter, Depends()]) -> Response:
        """Every defect matching the filters as CSV (one row per defect, newest first)."""
        _total, items = await asyncio.to_thread(
            reviews.list_defects, store, **filters.as_kwargs(), limit=None
        )
        return Response(
            to_csv(items),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="linewatch-defects.csv"'},
        )

    @api.get("/history", response_class=HTMLResponse, include_in_schema=False)
    async def history_page(request: Request) -> Any:
        found = sessions.page(request)
        if found is None:
            return login_redirect(request)
        return HISTORY_PAGE.replace("{user}", html.escape(found[0].username))

    @api.get("/api/defects/{defect_id}")
    async def get_defect(defect_id: PathId, _: Viewer) -> dict[str, Any]:
        """One defect with its audit trail (who decided what, when, and what it replaced)."""
        try:
            found = await asyncio.to_thread(reviews.get_defect, store, defect_id)
        except KeyError as e:
            raise HTTPException(404, f"no defect {defect_id}") from e
        return {**found, "reviews": await asyncio.to_thread(reviews.audit_trail, store, defect_id)}

    @api.post("/api/defects/{defect_id}/review")
    async def review(defect_id: PathId, body: Decision, user: OperatorWrite) -> dict[str, Any]:
        """Confirm or reject one defect (optionally with a defect type and a note); audited."""
        try:
            return await asyncio.to_thread(
                reviews.review, store, defect_id, user.username, body.decision, body.defect_type, body.note
            )
        except KeyError as e:
            raise HTTPException(404, f"no defect {defect_id}") from e

    @api.post("/api/defects/review")
    async def review_many(body: BulkDecision, user: OperatorWrite) -> dict[str, Any]:
        """The same decision on several defects; every one gets its own audit row."""
        done, missing = [], []
        for defect_id in body.ids:
            try:
                await asyncio.to_thread(
                    reviews.review,
                    store,
                    defect_id,
                    user.username,
                    body.decision,
                    body.defect_type,
                    body.note,
                )
                done.append(defect_id)
            except KeyError:
                missing.append(defect_id)
        return {"reviewed": done, "missing": missing}

    @api.get("/review", response_class=HTMLResponse, include_in_schema=False)
    async def review_page(request: Request) -> Any:
        found = sessions.page(request)
        if found is None:
            return login_redirect(request)
        user, csrf = found
        return (
            REVIEW_PAGE.replace("{csrf}", html.escape(csrf))
            .replace("{user}", html.escape(user.username))
            .replace("{role}", html.escape(user.role))
            .replace("{states}", ",".join(REVIEW_STATES))
        )

    return api
