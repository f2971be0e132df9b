"""Who may do what on the dashboard: logins, signed session cookies, CSRF tokens, a login throttle.

Sessions are signed (itsdangerous) cookies holding the user name, role, a per-session CSRF token and
the login time; they are HttpOnly and SameSite=Lax, and a login always issues a fresh one (no
session fixation). Every state-changing request must echo the session's CSRF token in the
``X-CSRF-Token`` header. Failed logins are throttled per client address and user name. The signing
key comes from ``LINEWATCH_SECRET_KEY`` or is generated once into the data dir (mode 0600).
"""

from __future__ import annotations

import os
import secrets
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from pipeline.store.store import Store
from pipeline.store.users import Principal, account, revoke_session, revoked_sessions, token_principal

COOKIE = "lw_session"
SESSION_MAX_AGE_S = 12 * 3600  # one shift and then some
CSRF_HEADER = "X-CSRF-Token"
ACCOUNT_CACHE_S = 5.0  # a disabled account or a changed role applies within this long


def secret_key(data_dir: Path, configured: str | None) -> str:
    """The configured key, else the one generated into ``data_dir/secret_key`` on first use."""
    if configured:
        return configured
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class LoginThrottle:
    """At most ``attempts`` failed logins per (address, user) within ``window_s``."""

    def __init__(self, attempts: int = 5, window_s: float = 300.0) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def retry_after(self, key: tuple[str, str]) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        times = self._failures[key]
        now = time.monotonic()
        while times and now - times[0] > self.window_s:
            times.popleft()
        return self.window_s - (now - times[0]) if len(times) >= self.attempts else 0.0

    def failed(self, key: tuple[str, str]) -> None:
        self._failures[key].append(time.monotonic())

    def attempt(self, key: tuple[str, str]) -> float:
        """Count a login attempt before its password is checked; seconds to wait (refused) or 0.
        Counted only after the check, parallel guesses all passed ``retry_after`` before the first
        failure was recorded (40 tried at once, none refused)."""
        wait = self.retry_after(key)
        if wait == 0:
            self.failed(key)
        return wait

    def succeeded(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)


class Sessions:
    """Issues and reads session cookies; FastAPI dependencies check roles and CSRF tokens."""

    def __init__(self, key: str, secure_cookies: bool = False, store: Store | None = None) -> None:
        self.serializer = URLSafeTimedSerializer(key, salt="linewatch-session")
        self.secure = secure_cookies
        self.store = store  # with a store, role changes and disabled accounts apply at once
        self._accounts: dict[str, tuple[Principal | None, float]] = {}
        # sessions logged out here (their nonce -> when their cookie expires anyway), known at
        # once; with a store, every dashboard's logouts, read from it at most every ACCOUNT_CACHE_S
        self._revoked: dict[str, float] = {}
        self._stored_revoked: tuple[frozenset[str], float] = (frozenset(), float("-inf"))

    def account(self, username: str) -> Principal | None:
        """The account as stored now, cached for ``ACCOUNT_CACHE_S`` (one query per user and interval)."""
        if self.store is None:
            return Principal(username, "viewer")
        cached = self._accounts.get(username)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        found = account(self.store, username)
        self._accounts[username] = (found, time.monotonic() + ACCOUNT_CACHE_S)
        return found

    def forget(self, username: str) -> None:
        self._accounts.pop(username, None)

    def issue(self, response: Response, user: Principal) -> str:
        """A fresh session for ``user``; returns its CSRF token."""
        csrf = secrets.token_urlsafe(24)
        token = self.serializer.dumps(
            {"u": user.username, "r": user.role, "c": csrf, "n": secrets.token_hex(8), "p": user.credential}
        )
        response.set_cookie(
            COOKIE, token, max_age=SESSION_MAX_AGE_S, httponly=True, samesite="lax", secure=self.secure
        )
        return csrf

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE, httponly=True, samesite="lax", secure=self.secure)

    def read(self, request: Request) -> tuple[Principal, str] | None:
        """(user, csrf token) of the request's session; None when absent, forged or expired."""
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        try:
            data: Any = self.serializer.loads(token, max_age=SESSION_MAX_AGE_S)
            if self.revoked(str(data.get("n"))):
                return None
            return Principal(str(data["u"]), str(data["r"]), str(data.get("p", ""))), str(data["c"])
        except (BadSignature, KeyError, TypeError, AttributeError):
            return None

    def page(self, request: Request) -> tuple[Principal, str] | None:
        """(the account as stored now, csrf token) for an HTML page; None (log in again) without a
        session, when the account was disabled or removed, or when its password changed since this
        session logged in. Pages that only read the cookie still showed a disabled account the
        station table and the latest defects."""
        found = self.read(request)
        if found is None:
            return None
        current = self.account(found[0].username)
        if current is None or current.credential != found[0].credential:
            return None
        return current, found[1]

    def revoked(self, nonce: str) -> bool:
        """Whether the session ``nonce`` was logged out, here or on another dashboard (within
        ``ACCOUNT_CACHE_S``); a restarted dashboard still knows."""
        if nonce in self._revoked:
            return True
        if self.store is None:
            return False
        nonces, fresh_until = self._stored_revoked
        if fresh_until <= time.monotonic():
            nonces = revoked_sessions(self.store)
            self._stored_revoked = (nonces, time.monotonic() + ACCOUNT_CACHE_S)
        return nonce in nonces

    def revoke(self, request: Request) -> None:
        """End the request's session for good: a copy of its cookie no longer logs anyone in, on
        any dashboard sharing the store. Blocks on the store: call it from a thread."""
        token = request.cookies.get(COOKIE)
        if not token:
            return
        try:
            data: Any = self.serializer.loads(token, max_age=SESSION_MAX_AGE_S)
            nonce = str(data["n"])
        except (BadSignature, KeyError, TypeError):
            return
        now = time.time()
        self._revoked = {n: t for n, t in self._revoked.items() if t > now}
        self._revoked[nonce] = now + SESSION_MAX_AGE_S
        if self.store is not None:
            expires = datetime.fromtimestamp(now + SESSION_MAX_AGE_S, UTC)
            revoke_session(self.store, nonce, expires)

    def check(self, request: Request, role: str, write: bool) -> Principal:
        """The user behind the request's API token or session with at least ``role``; for a
        session, ``write`` also checks the CSRF header (a bearer token is never sent by a browser on
        its own, so token requests need none)."""
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and self.store is not None:
            user = token_principal(self.store, bearer[7:].strip())
            if user is None:
                raise HTTPException(
                    401, "unknown or revoked API token", headers={"WWW-Authenticate": "Bearer"}
                )
        else:
            session = self.read(request)
            if session is None:
                raise HTTPException(401, "log in first", headers={"WWW-Authenticate": "Cookie"})
            signed, csrf = session
            current = self.account(signed.username)
            if current is None:
                raise HTTPException(401, f"account {signed.username} is disabled or gone; log in again")
            if current.credential != signed.credential:
                raise HTTPException(401, f"the password of {signed.username} changed; log in again")
            user = current
            # as bytes: compare_digest raises TypeError (a 500) on a str with non-ASCII characters
            sent = request.headers.get(CSRF_HEADER, "").encode()
            if write and not secrets.compare_digest(sent, csrf.encode()):
                raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
        if not user.may(role):
            raise HTTPException(403, f"{user.username} is a {user.role}; this needs {role} or above")
        return user


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def _viewer(request: Request) -> Principal:
    return _sessions(request).check(request, "viewer", write=False)


def _viewer_write(request: Request) -> Principal:
    return _sessions(request).check(request, "viewer", write=True)


def _operator_write(request: Request) -> Principal:
    return _sessions(request).check(request, "operator", write=True)


def _admin(request: Request) -> Principal:
    return _sessions(request).check(request, "admin", write=False)


def _admin_write(request: Request) -> Principal:
    return _sessions(request).check(request, "admin", write=True)


# route parameters: ``user: Viewer`` etc. (the app keeps its Sessions in app.state.sessions)
Viewer = Annotated[Principal, Depends(_viewer)]
ViewerWrite = Annotated[Principal, Depends(_viewer_write)]  # any role, state-changing (CSRF checked)
OperatorWrite = Annotated[Principal, Depends(_operator_write)]
Admin = Annotated[Principal, Depends(_admin)]
AdminWrite = Annotated[Principal, Depends(_admin_write)]
