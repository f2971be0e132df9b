"""SQLAlchemy models of the store: stations, inspections, defects, reviews, users and their sessions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

VERDICT_STATUSES = ("pending", "ok", "unparsed", "skipped", "none", "failed", "episode")
REVIEW_STATES = ("unreviewed", "confirmed", "rejected")
ROLES = ("viewer", "operator", "admin")

# BIGINT on PostgreSQL; INTEGER on SQLite, because only "INTEGER PRIMARY KEY" is SQLite's rowid alias
# that autoincrements
BigId = BigInteger().with_variant(Integer, "sqlite")

# deterministic constraint names: SQLite migrations (batch mode) and PostgreSQL need the same names
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zones: SQLAlchemy would silently drop the offset of an aware datetime and
    return naive ones. Values are converted to UTC before storing and come back marked as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store only takes timezone-aware times")
        value = value.astimezone(UTC)
        # naive UTC on SQLite so that stored text sorts and compares in time order
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base; its metadata is what the migrations must produce."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime()}


class Station(Base):
    """A camera station; its YAML configuration is kept as text for the dashboard."""

    __tablename__ = "stations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    product: Mapped[str] = mapped_column(String(200))
    config_yaml: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Inspection(Base):
    """One inspected frame: a small row per frame, removed by retention."""

    __tablename__ = "inspections"
    __table_args__ = (
        UniqueConstraint("station_id", "seq"),
        Index(None, "station_id", "captured_at"),
        Index(None, "flagged", "captured_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(64), ForeignKey("stations.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    captured_at: Mapped[datetime]
    inspected_at: Mapped[datetime]
    score: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float] = mapped_column(Float)
    worker: Mapped[str] = mapped_column(String(200))

    defect: Mapped[Defect | None] = relationship(back_populates="inspection")


class Defect(Base):
    """A flagged frame: evidence files, regions, the explainer's verdict and the review state."""

    __tablename__ = "defects"
    __table_args__ = (
        UniqueConstraint("inspection_id"),
        UniqueConstraint("station_id", "seq"),
        Index(None, "review_state"),
        CheckConstraint(_one_of("verdict_status", VERDICT_STATUSES), name="verdict_status"),
        CheckConstraint(_one_of("review_state", REVIEW_STATES), name="review_state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(BigId, ForeignKey("inspections.id", ondelete="CASCADE"))
    station_id: Mapped[str] = mapped_column(String(64), ForeignKey("stations.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    # paths relative to the data dir; None when the original frame had expired before recording
    evidence_path: Mapped[str | None] = mapped_column(String(500))
    heatmap_path: Mapped[str | None] = mapped_column(String(500))
    regions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    position_words: Mapped[str] = mapped_column(Text, default="")
    score: Mapped[float] = mapped_column(Float)

    verdict_status: Mapped[str] = mapped_column(String(16), default="pending")
    verdict_anomaly: Mapped[bool | None] = mapped_column(Boolean)
    verdict_location: Mapped[str | None] = mapped_column(Text)
    verdict_defect_type: Mapped[str | None] = mapped_column(Text)
    verdict_description: Mapped[str | None] = mapped_column(Text)
    verdict_confidence: Mapped[float | None] = mapped_column(Float)
    verdict_raw: Mapped[str | None] = mapped_column(Text)
    # the frame whose LLM verdict stands for this one (itself, or the head of its defect episode)
    verdict_episode_seq: Mapped[int | None] = mapped_column(BigInteger)
    # detector and LLM agree (the LLM also sees an anomaly); None while there is no LLM verdict
    verdict_agrees: Mapped[bool | None] = mapped_column(Boolean)
    verdict_note: Mapped[str | None] = mapped_column(Text)  # why skipped/failed/unparsed
    verdict_model: Mapped[str | None] = mapped_column(String(200))
    verdict_at: Mapped[datetime | None]

    review_state: Mapped[str] = mapped_column(String(16), default="unreviewed")
    defect_type: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    reviewed_at: Mapped[datetime | None]

    inspection: Mapped[Inspection] = relationship(back_populates="defect")
    reviews: Mapped[list[Review]] = relationship(back_populates="defect", order_by="Review.at")


class Review(Base):
    """Audit trail: one row per review decision, with the defect's review fields before it."""

    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint(_one_of("decision", REVIEW_STATES), name="decision"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    defect_id: Mapped[int] = mapped_column(BigId, ForeignKey("defects.id", ondelete="CASCADE"), index=True)
    # "user" is a reserved word in PostgreSQL (SELECT user returns the session user): avoid it
    username: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    decision: Mapped[str] = mapped_column(String(16))
    defect_type: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    previous: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    defect: Mapped[Defect] = relationship(back_populates="reviews")


class User(Base):
    """A dashboard user; only a password hash is stored."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("username"),
        CheckConstraint(_one_of("role", ROLES), name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class RevokedSession(Base):
    """A dashboard session ended by logging out: its cookie no longer logs anyone in, on any
    dashboard process, after restarts too. Rows past the cookie's own expiry are moot and purged."""

    __tablename__ = "revoked_sessions"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ApiToken(Base):
    """A machine client's bearer token: only its SHA-256 is stored; it acts with its user's role."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
