"""Dashboard users: argon2 password hashes, roles, and the first administrator of a fresh install."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from pipeline.store.models import ROLES, User
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
    return Principal(username, role) if user is not None and not user.disabled else None


def list_users(store: Store) -> list[Principal]:
    with store._transaction("listing users", write=False) as session:
        return [Principal(u.username, u.role) for u in session.scalars(select(User).order_by(User.username))]


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
