"""User and API-token management: admins manage accounts; everyone manages their own tokens."""

from __future__ import annotations

import asyncio
import html
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from dashboards.auth import Admin, AdminWrite, Sessions, Viewer, ViewerWrite
from dashboards.review import PathId, login_redirect
from dashboards.review_page import ADMIN_PAGE
from pipeline.store import users
from pipeline.store.store import Store


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    role: Literal["viewer", "operator", "admin"] = "viewer"


class UserChange(BaseModel):
    role: Literal["viewer", "operator", "admin"] | None = None
    disabled: bool | None = None


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=100)


def router(store: Store, sessions: Sessions) -> APIRouter:
    api = APIRouter()

    @api.get("/api/users")
    async def list_users(_: Admin) -> list[dict[str, Any]]:
        return await asyncio.to_thread(users.list_accounts, store)

    @api.post("/api/users", status_code=201)
    async def add_user(body: NewUser, _: AdminWrite) -> dict[str, str]:
        try:
            user = await asyncio.to_thread(users.add_user, store, body.username, body.password, body.role)
        except users.UserError as e:
            raise HTTPException(409 if "exists" in str(e) else 422, str(e)) from e
        return {"username": user.username, "role": user.role}

    @api.post("/api/users/{username}")
    async def change_user(username: str, body: UserChange, admin: AdminWrite) -> dict[str, str]:
        """Change a user's role or disable/enable it; takes effect within seconds, sessions included."""
        if username == admin.username and (body.disabled or (body.role and body.role != "admin")):
            raise HTTPException(422, "an admin cannot demote or disable their own account")
        try:
            user = await asyncio.to_thread(
                users.update_user, store, username, role=body.role, disabled=body.disabled
            )
        except users.UserError as e:
            raise HTTPException(404 if "no user" in str(e) else 422, str(e)) from e
        sessions.forget(username)
        return {"username": user.username, "role": user.role}

    @api.get("/api/tokens")
    async def list_tokens(user: Viewer) -> list[dict[str, Any]]:
        """Your tokens (an admin sees everyone's); token values are shown only when created."""
        return await asyncio.to_thread(users.list_tokens, store, None if user.may("admin") else user.username)

    @api.post("/api/tokens", status_code=201)
    async def create_token(body: NewToken, user: ViewerWrite) -> dict[str, str]:
        """A bearer token acting with your role, for scripts and MES integrations; shown once."""
        token = await asyncio.to_thread(users.create_token, store, user.username, body.name)
        return {"name": body.name, "token": token}

    @api.post("/api/tokens/{token_id}/revoke", status_code=204)
    async def revoke_token(token_id: PathId, user: ViewerWrite) -> None:
        owner = None if user.may("admin") else user.username
        if not await asyncio.to_thread(users.revoke_token, store, token_id, owner):
            raise HTTPException(404, f"no token {token_id} of yours")

    @api.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    async def admin_page(request: Request) -> Any:
        found = sessions.page(request)
        if found is None:
            return login_redirect(request)
        user = found[0]
        return (
            ADMIN_PAGE.replace("{csrf}", html.escape(found[1]))
            .replace("{user}", html.escape(user.username))
            .replace("{role}", html.escape(user.role))
        )

    return api
