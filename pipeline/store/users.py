"""Dashboard users: argon2 password hashes, roles, and the first administrator of a fresh install."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from pipeline.store.models import ROLES, ApiToken, RevokedSession, User, utcnow
from pipeline.store.store import Store

MIN_PASSWORD = 10
INITIAL_PASSWORD_FILE = "initial-admin-password"
_hasher = PasswordHasher()
# verified against when the user does not exist, so a wrong name costs as long as a wrong password
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UserError(ValueError):
    """A user that cannot be added: taken name, unknown role, too short a password."""


@dataclass(frozen=True)
class Principal:
    """Who is logged in, as the dashboard needs it."""

    username: str
    role: str
    #: a digest of the password hash: a session carries the one it logged in with, so a password
    #: change ends the user's other sessions (empty where no password is involved: API tokens)
    credential: str = field(default="", compare=False, repr=False)

    def may(self, role: str) -> bool:
        """True when this user's role is ``role`` or above (viewer < operator < admin)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def add_user(store: Store, username: str, password: str, role: str) -> Principal:
    if role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not 1 <= len(username) <= 64 or not username.isprintable() or username.strip() != username:
        raise UserError(f"user name {username!r} must be 1-64 printable characters without outer spaces")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
    try:
        with store._transaction(f"adding user {username}", write=True) as session:
            session.add(User(username=username, password_hash=_hasher.hash(password), role=role))
    except IntegrityError as e:
        raise UserError(f"user {username!r} exists already") from e
    return Principal(username, role)


def authenticate(store: Store, username: str, password: str) -> Principal | None:
    """The user when name and password match an enabled account, else None."""
    with store._transaction("checking a login", write=False) as session:
        user = session.scalars(select(User).where(User.username == username)).first()
        stored = user.password_hash if user is not None and not user.disabled else _DUMMY_HASH
        role = user.role if user is not None else "viewer"
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled:
        return None
    return Principal(username, role, credential_of(stored))


def set_password(store: Store, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
    with store._transaction(f"changing the password of {username}", write=True) as session:
        user = session.scalars(select(User).where(User.username == username)).first()
        if user is None:
            raise UserError(f"no user {username!r}")
        user.password_hash = _hasher.hash(password)


def ensure_first_admin(store: Store, data_dir: Path) -> Path | None:
    """On a store without users, create ``admin`` with a random password written to
    ``data_dir/initial-admin-password`` (mode 0600); returns that file, None when users exist."""
    with store._transaction("counting users", write=False) as session:
        if session.scalar(select(func.count()).select_from(User)):
            return None
    password = secrets.token_urlsafe(12)
    path = data_dir / INITIAL_PASSWORD_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    try:
        add_user(store, "admin", password, "admin")
    except UserError:  # another process created it meanwhile
        path.unlink(missing_ok=True)
        return None
    return path


TOKEN_PREFIX = "lw_"
TOKEN_TOUCH_S = 60.0  # "last used" is kept to the minute: a polling client writes once a minute


def _token_hash(token: str) -> str:
    # tokens are 256 random bits: a plain SHA-256 is enough (no dictionary to slow down)
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, username: str, name: str) -> str:
    """A new bearer token for ``username``; the plain token is returned once and never stored."""
    if not 1 <= len(name) <= 100:
        raise UserError("token name must be 1-100 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store._transaction(f"creating a token for {username}", write=True) as session:
        user = session.scalars(select(User).where(User.username == username)).first()
        if user is None:
            raise UserError(f"no user {username!r}")
        session.add(ApiToken(user_id=user.id, name=name, token_hash=_token_hash(token)))
    return token


def token_principal(store: Store, token: str) -> Principal | None:
    """The enabled user a live (not revoked) token belongs to; records when it was last used."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    with store._transaction("checking an API token", write=True) as session:
        row = session.execute(
            select(ApiToken, User)
            .join(User, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == _token_hash(token), ApiToken.revoked.is_(False))
        ).first()
        if row is None or row[1].disabled:
            return None
        now, last = utcnow(), row[0].last_used_at
        if last is None or (now - last).total_seconds() > TOKEN_TOUCH_S:  # no write per request
            row[0].last_used_at = now
        return Principal(row[1].username, row[1].role)


def list_tokens(store: Store, username: str | None = None) -> list[dict[str, Any]]:
    """Tokens (never their values), of one user or of everyone."""
    query = select(ApiToken, User.username).join(User, ApiToken.user_id == User.id).order_by(ApiToken.id)
    if username is not None:
        query = query.where(User.username == username)
    with store._transaction("listing tokens", write=False) as session:
        return [
            {
                "id": t.id,
                "user": name,
                "name": t.name,
                "created_at": t.created_at.isoformat(),
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
                "revoked": t.revoked,
            }
            for t, name in session.execute(query)
        ]


def revoke_token(store: Store, token_id: int, username: str | None = None) -> bool:
    """Revoke a token (only ``username``'s own unless None); False when there is no such token."""
    with store._transaction(f"revoking token {token_id}", write=True) as session:
        query = select(ApiToken).join(User, ApiToken.user_id == User.id).where(ApiToken.id == token_id)
        if username is not None:
            query = query.where(User.username == username)
        token = session.scalars(query).first()
        if token is None:
            return False
        token.revoked = True
        return True


def revoke_session(store: Store, nonce: str, expires_at: datetime) -> None:
    """Record a logged-out session (until its cookie expires anyway) and purge expired records."""
    try:
        with store._transaction("recording a logout", write=True) as session:
            session.execute(delete(RevokedSession).where(RevokedSession.expires_at <= utcnow()))
            if session.get(RevokedSession, nonce) is None:
                session.add(RevokedSession(nonce=nonce, expires_at=expires_at))
    except IntegrityError:  # the same session logged out at once on another dashboard
        pass


def revoked_sessions(store: Store) -> frozenset[str]:
    """The nonces of logged-out sessions whose cookies have not expired yet."""
    with store._transaction("reading logged-out sessions", write=False) as session:
        query = select(RevokedSession.nonce).where(RevokedSession.expires_at > utcnow())
        return frozenset(session.scalars(query))


def account(store: Store, username: str) -> Principal | None:
    """The user as the database has it now (role changes and disabling take effect at once)."""
    with store._transaction("reading a user", write=False) as session:
        user = session.scalars(select(User).where(User.username == username)).first()
        if user is None or user.disabled:
            return None
        return Principal(user.username, user.role, credential_of(user.password_hash))


def credential_of(password_hash: str) -> str:
    """What a session remembers of the password it logged in with: not the hash itself."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def update_user(
    store: Store, username: str, *, role: str | None = None, disabled: bool | None = None
) -> Principal:
    if role is not None and role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}")
    with store._transaction(f"updating user {username}", write=True) as session:
        user = session.scalars(select(User).where(User.username == username)).first()
        if user is None:
            raise UserError(f"no user {username!r}")
        if role is not None:
            user.role = role
        if disabled is not None:
            user.disabled = disabled
        return Principal(user.username, user.role)


def list_accounts(store: Store) -> list[dict[str, Any]]:
    with store._transaction("listing users", write=False) as session:
        return [
            {
                "username": u.username,
                "role": u.role,
                "disabled": u.disabled,
                "created_at": u.created_at.isoformat(),
            }
            for u in session.scalars(select(User).order_by(User.username))
        ]
