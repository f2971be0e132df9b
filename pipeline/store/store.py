"""The Store: idempotent batched writes of results and verdicts, retention, and small queries.

Every method runs in its own transaction and is synchronous (the recorder calls it in a thread).
When the database cannot be reached, or SQLite stays locked past the busy timeout, a method raises
``StoreUnavailable`` after rolling back: nothing of the call was written, so the caller keeps the
stream messages un-acknowledged and retries later. Writes are idempotent on the frame id
(station, seq), so retrying a batch that did commit (e.g. the connection broke during COMMIT)
creates no duplicates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Integer, Table, case, cast, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pipeline.messages import ResultMessage, VerdictMessage
from pipeline.store.engine import make_engine, translated_errors, writer
from pipeline.store.errors import StoreError
from pipeline.store.models import VERDICT_STATUSES, Defect, Inspection, Review, Station, utcnow

#: rows per INSERT; well below SQLite's 32766 bound parameters for the widest row. Rows go as
#: parameter lists of one statement (SQLAlchemy's "insertmanyvalues" makes it one multi-row INSERT
#: per page), so the statement is compiled once and cached, not once per batch: with the rows in the
#: statement (``values(rows)``), compiling was over half of a 16-result batch's 4.4 ms.
_CHUNK = 500


class BadResult(StoreError, ValueError):
    """A result that no database would take (e.g. a NaN score); retrying cannot help."""

    def __init__(self, frame_id: str, problem: str) -> None:
        super().__init__(f"result {frame_id}: {problem}")
        self.frame_id = frame_id


@dataclass(frozen=True)
class RecordOutcome:
    """What one ``record`` call did: new inspection rows, already-known frames, new defects."""

    inserted: int
    duplicates: int
    defects: int


@dataclass(frozen=True)
class PurgeOutcome:
    """Rows removed by retention and the evidence files (relative to the data dir) to delete."""

    inspections: int
    defects: int
    reviews: int
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StationSummary:
    """Counts per station for ``linewatch status`` and the dashboard's station list."""

    station_id: str
    name: str
    product: str
    inspections: int
    flagged: int
    unreviewed: int
    last_captured_at: datetime | None


class Store:
    """The SQL store on one engine (SQLite or PostgreSQL); the schema must be migrated first."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = writer(engine)

    @classmethod
    def open(cls, url: str) -> Store:
        """A store on a new engine for ``url``; ``close()`` disposes of it."""
        return cls(make_engine(url))

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, action: str, *, write: bool) -> Iterator[Session]:
        bind = self._writer if write else self._engine
        with translated_errors(action), Session(bind, expire_on_commit=False) as session, session.begin():
            yield session

    def upsert_station(self, station_id: str, name: str, product: str, config_yaml: str) -> None:
        """Create the station or update its name, product and configuration."""
        now = utcnow()
        with self._transaction(f"saving station {station_id}", write=True) as session:
            stmt = _insert(session, Station.__table__).values(
                id=station_id,
                name=name,
                product=product,
                config_yaml=config_yaml,
                created_at=now,
                updated_at=now,
            )
            new = stmt.excluded
            changed = (
                (Station.name != new.name)
                | (Station.product != new.product)
                | (Station.config_yaml != new.config_yaml)
            )
            # updated_at moves only when something changed, so it tells when the config last changed
            session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"],
                    set_={
                        "name": new.name,
                        "product": new.product,
                        "config_yaml": new.config_yaml,
                        "updated_at": new.updated_at,
                    },
                    where=changed,
                )
            )

    def record(
        self,
        results: Sequence[ResultMessage],
        evidence: dict[str, tuple[str, str]] | None = None,
        unexplained: Iterable[str] = (),
    ) -> RecordOutcome:
        """Store a batch of results in one transaction; a frame already stored is skipped.

        ``evidence`` maps a frame id ``station:seq`` to (evidence_path, heatmap_path), relative to
        the data dir; a flagged frame without an entry gets a defect without files. Defects of the
        ``unexplained`` stations (explainer backend none) get verdict status "none", the others
        "pending" until the explainer's verdict arrives. Unknown
        stations are created with their id as name, so a result never fails on a missing station.
        Raises BadResult (before writing anything) for a result with non-finite numbers.
        """
        evidence = evidence or {}
        first: dict[str, ResultMessage] = {}
        for r in results:
            first.setdefault(r.id, r)  # a frame twice in one batch: the first copy wins
        unique = list(first.values())
        rows = [_inspection_row(r) for r in unique]
        inserted = defects = 0
        if rows:
            with self._transaction(f"recording {len(rows)} results", write=True) as session:
                _ensure_stations(session, {r.station_id for r in unique})
                stmt = _insert(session, Inspection.__table__)
                stmt = stmt.on_conflict_do_nothing(index_elements=["station_id", "seq"])
                stmt = stmt.returning(Inspection.id)
                for chunk in _chunks(rows):
                    inserted += len(session.execute(stmt, chunk).all())
                flagged = [r for r in unique if r.flagged]
                defects = _insert_defects(session, flagged, evidence, frozenset(unexplained))
        return RecordOutcome(inserted=inserted, duplicates=len(results) - inserted, defects=defects)

    def set_verdicts(self, verdicts: Sequence[VerdictMessage]) -> list[VerdictMessage]:
        """Store explainer verdicts on their defects in one transaction; returns those without a defect.

        A verdict can overtake its result (two streams, two consumers): the caller keeps the
        returned ones un-acked and tries again later. Setting the same verdict twice is harmless.
        Agreement: the detector flagged every defect, so the two agree when the LLM answered
        (status ok) that there is an anomaly; without an LLM answer agreement is unknown (None).
        """
        if not verdicts:
            return []
        waiting = []
        with self._transaction(f"saving {len(verdicts)} verdicts", write=True) as session:
            for v in verdicts:
                stmt = (
                    update(Defect)
                    .where(Defect.station_id == v.station_id, Defect.seq == v.seq)
                    .values(_verdict_values(v))
                )
                if not session.execute(stmt.returning(Defect.id)).all():
                    waiting.append(v)
        return waiting

    def set_evidence_paths(self, paths: list[tuple[str, int, str]]) -> int:
        """Point each (station, seq) defect without an evidence file at its path, all in one
        transaction; returns how many changed. A defect not recorded yet (its path is filled in
        when it is) or that has a file already is left alone."""
        if not paths:
            return 0
        changed = 0
        with self._transaction(f"saving evidence of {len(paths)} frames", write=True) as session:
            for station_id, seq, path in paths:
                stmt = (
                    update(Defect)
                    .where(Defect.station_id == station_id, Defect.seq == seq, Defect.evidence_path.is_(None))
                    .values(evidence_path=path)
                )
                changed += len(session.execute(stmt.returning(Defect.id)).all())
        return changed

    def purge_older_than(self, days: float, *, now: datetime | None = None) -> PurgeOutcome:
        """Delete inspections captured more than ``days`` ago, with their defects and reviews.

        Returns the evidence and heatmap paths of the deleted defects: the caller deletes the
        files after this returns, so a failed purge never leaves rows pointing at missing files.
        """
        if not days > 0:
            raise ValueError(f"retention must be a positive number of days, got {days}")
        cutoff = (now or utcnow()) - timedelta(days=days)
        old = select(Inspection.id).where(Inspection.captured_at < cutoff)
        old_defects = select(Defect.id).where(Defect.inspection_id.in_(old))
        with self._transaction(f"purging inspections before {cutoff:%Y-%m-%d %H:%M}", write=True) as session:
            paths = session.execute(
                select(Defect.evidence_path, Defect.heatmap_path).where(Defect.id.in_(old_defects))
            ).all()
            # explicit deletes rather than ON DELETE CASCADE: the counts are reported, and a SQLite
            # engine opened without the foreign_keys pragma would leave orphans otherwise
            reviews = _deleted(session, delete(Review).where(Review.defect_id.in_(old_defects)))
            defects = _deleted(session, delete(Defect).where(Defect.inspection_id.in_(old)))
            inspections = _deleted(session, delete(Inspection).where(Inspection.captured_at < cutoff))
        files = [p for pair in paths for p in pair if p]
        return PurgeOutcome(inspections=inspections, defects=defects, reviews=reviews, files=files)

    def count_inspections(self, station_id: str | None = None) -> int:
        """Inspected frames stored, for one station or all."""
        stmt = select(func.count()).select_from(Inspection)
        if station_id is not None:
            stmt = stmt.where(Inspection.station_id == station_id)
        with self._transaction("counting inspections", write=False) as session:
            return int(session.execute(stmt).scalar_one())

    def last_seq(self, station_id: str) -> int | None:
        """The highest frame seq stored for the station; None when it has none."""
        with self._transaction(f"reading the last seq of {station_id}", write=False) as session:
            found = session.scalar(
                select(func.max(Inspection.seq)).where(Inspection.station_id == station_id)
            )
        return None if found is None else int(found)

    def flagged_seqs(self, station_id: str) -> list[int]:
        """Sequence numbers of the flagged frames of a station, ascending."""
        stmt = select(Inspection.seq).where(Inspection.station_id == station_id, Inspection.flagged)
        with self._transaction("listing flagged frames", write=False) as session:
            return list(session.execute(stmt.order_by(Inspection.seq)).scalars())

    def hourly_counts(
        self, station_id: str, hours: int = 24, *, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Inspected and flagged frames per hour over the last ``hours`` hours, oldest first (every
        hour listed, empty ones with zeros): the station page's defect-rate chart."""
        end = (now or utcnow()).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start = end - timedelta(hours=hours)
        with self._transaction(f"counting {station_id} per hour", write=False) as session:
            offset = start.timestamp()
            if session.get_bind().dialect.name == "sqlite":  # rows are >= start: truncation is floor
                seconds = cast(func.strftime("%s", Inspection.captured_at), Integer) - offset
                bucket = cast(seconds / 3600, Integer).label("bucket")
            else:  # PostgreSQL rounds when casting, so floor first
                seconds = func.extract("epoch", Inspection.captured_at) - offset
                bucket = cast(func.floor(seconds / 3600), Integer).label("bucket")
            stmt = (
                select(bucket, func.count(), func.sum(case((Inspection.flagged, 1), else_=0)))
                .where(Inspection.station_id == station_id, Inspection.captured_at >= start)
                .group_by(bucket)
            )
            counts = {int(b): (int(n), int(f or 0)) for b, n, f in session.execute(stmt)}
        return [
            {
                "hour": (start + timedelta(hours=i)).isoformat(),
                "inspected": counts.get(i, (0, 0))[0],
                "flagged": counts.get(i, (0, 0))[1],
            }
            for i in range(hours)
        ]

    def station_summary(self) -> list[StationSummary]:
        """Per station: frames inspected, flagged, defects awaiting review, last capture time."""
        per_station = (
            select(
                Inspection.station_id.label("sid"),
                func.count().label("n"),
                func.sum(case((Inspection.flagged, 1), else_=0)).label("flagged"),
                func.max(Inspection.captured_at).label("last"),
            )
            .group_by(Inspection.station_id)
            .subquery()
        )
        unreviewed = (
            select(Defect.station_id.label("sid"), func.count().label("n"))
            .where(Defect.review_state == "unreviewed")
            .group_by(Defect.station_id)
            .subquery()
        )
        stmt = (
            select(
                Station.id,
                Station.name,
                Station.product,
                func.coalesce(per_station.c.n, 0),
                func.coalesce(per_station.c.flagged, 0),
                func.coalesce(unreviewed.c.n, 0),
                per_station.c["last"],
            )
            .outerjoin(per_station, per_station.c.sid == Station.id)
            .outerjoin(unreviewed, unreviewed.c.sid == Station.id)
            .order_by(Station.id)
        )
        with self._transaction("summarising stations", write=False) as session:
            rows = session.execute(stmt).all()
        return [
            StationSummary(sid, name, product, int(n), int(flagged), int(todo), last)
            for sid, name, product, n, flagged, todo, last in rows
        ]


def _verdict_values(v: VerdictMessage) -> dict[str, Any]:
    if v.status not in VERDICT_STATUSES:
        raise ValueError(f"verdict status {v.status!r} is not one of {', '.join(VERDICT_STATUSES)}")
    confidence = v.confidence if v.confidence is None or math.isfinite(v.confidence) else None
    return {
        "verdict_status": v.status,
        "verdict_anomaly": v.anomaly,
        "verdict_location": v.location,
        "verdict_defect_type": v.defect_type,
        "verdict_description": v.description,
        "verdict_confidence": confidence,
        "verdict_raw": v.raw,
        "verdict_episode_seq": v.episode_seq,
        "verdict_agrees": bool(v.anomaly) if v.status == "ok" and v.anomaly is not None else None,
        "verdict_note": v.note,
        "verdict_model": v.model or None,
        "verdict_at": _timestamp(v.id, "explained_at", v.explained_at),
    }


def _insert(session: Session, table: Table | Any) -> Any:
    """INSERT with ON CONFLICT support for the session's dialect (SQLite and PostgreSQL only)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise StoreError(f"unsupported database {name!r}: linewatch stores into SQLite or PostgreSQL")


def _deleted(session: Session, stmt: Any) -> int:
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def _chunks(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


def _timestamp(frame: str, what: str, seconds: float) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError) as e:
        raise BadResult(frame, f"{what} {seconds!r} is not a valid unix time") from e


def _inspection_row(result: ResultMessage) -> dict[str, Any]:
    for name in ("score", "latency_ms"):
        if not math.isfinite(getattr(result, name)):
            raise BadResult(result.id, f"{name} is {getattr(result, name)!r}, not a finite number")
    return {
        "station_id": result.station_id,
        "seq": result.seq,
        "captured_at": _timestamp(result.id, "captured_at", result.captured_at),
        "inspected_at": _timestamp(result.id, "inspected_at", result.inspected_at),
        "score": result.score,
        "flagged": result.flagged,
        "latency_ms": result.latency_ms,
        "worker": result.worker,
    }


def _ensure_stations(session: Session, station_ids: set[str]) -> None:
    # results can arrive before `linewatch run` has saved the station (separate processes);
    # a placeholder keeps the foreign key satisfied until upsert_station fills it in
    now = utcnow()
    rows = [
        {"id": s, "name": s, "product": "", "config_yaml": "", "created_at": now, "updated_at": now}
        for s in sorted(station_ids)
    ]
    session.execute(_insert(session, Station.__table__).on_conflict_do_nothing(), rows)


def _position_words(regions: list[dict[str, Any]]) -> str:
    words = [str(r["position"]) for r in regions if isinstance(r, dict) and r.get("position")]
    return "; ".join(dict.fromkeys(words))  # distinct, in the order of the regions (highest first)


def _insert_defects(
    session: Session,
    flagged: list[ResultMessage],
    evidence: dict[str, tuple[str, str]],
    unexplained: frozenset[str],
) -> int:
    """Defects for flagged frames that have none yet (new ones, or a retry of a half-done batch)."""
    by_station: dict[str, dict[int, ResultMessage]] = {}
    for r in flagged:
        by_station.setdefault(r.station_id, {})[r.seq] = r
    rows = []
    for station_id, results in by_station.items():
        stmt = (
            select(Inspection.id, Inspection.seq)
            .outerjoin(Defect, Defect.inspection_id == Inspection.id)
            .where(Inspection.station_id == station_id, Inspection.seq.in_(list(results)))
            .where(Defect.id.is_(None))
        )
        for inspection_id, seq in session.execute(stmt).all():
            result = results[seq]
            evidence_path, heatmap_path = evidence.get(result.id, (None, None))
            rows.append(
                {
                    "inspection_id": inspection_id,
                    "station_id": station_id,
                    "seq": seq,
                    "evidence_path": evidence_path,
                    "heatmap_path": heatmap_path,
                    "regions": result.regions,
                    "position_words": _position_words(result.regions),
                    "score": result.score,
                    "verdict_status": "none" if station_id in unexplained else "pending",
                    "review_state": "unreviewed",
                }
            )
    created = 0
    # DO NOTHING still matters: a second recorder may insert the same defect concurrently
    stmt = _insert(session, Defect.__table__).on_conflict_do_nothing().returning(Defect.id)
    for chunk in _chunks(rows):
        created += len(session.execute(stmt, chunk).all())
    return created
