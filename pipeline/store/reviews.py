"""The review queue: flagged defects to look at, and operators' decisions with their audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from pipeline.store.models import REVIEW_STATES, Defect, Inspection, Review, utcnow
from pipeline.store.store import Store

DECISIONS = ("confirmed", "rejected")


def defect_view(d: Defect) -> dict[str, Any]:
    """A defect as the API and the review page show it: both verdicts side by side."""
    agreement = None if d.verdict_anomaly is None else bool(d.verdict_anomaly)  # LLM says anomaly too
    return {
        "id": d.id,
        "station": d.station_id,
        "seq": d.seq,
        "score": d.score,
        "position": d.position_words,
        "regions": d.regions,
        "evidence": d.evidence_path,
        "overlay": d.heatmap_path,
        "captured_at": d.inspection.captured_at.isoformat() if d.inspection else None,
        "review_state": d.review_state,
        "defect_type": d.defect_type,
        "note": d.note,
        "reviewed_by": d.reviewed_by,
        "reviewed_at": d.reviewed_at.isoformat() if d.reviewed_at else None,
        "verdict": {
            "status": d.verdict_status,
            "anomaly": d.verdict_anomaly,
            "location": d.verdict_location,
            "defect_type": d.verdict_defect_type,
            "description": d.verdict_description,
            "confidence": d.verdict_confidence,
            "agrees_with_detector": agreement,
        },
    }


def list_defects(
    store: Store,
    *,
    state: str | None = None,
    station: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    min_score: float | None = None,
    defect_type: str | None = None,
    limit: int | None = 50,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page of defects newest first); ``limit`` None returns all of them."""
    if state is not None and state not in REVIEW_STATES:
        raise ValueError(f"review state {state!r} is not one of {', '.join(REVIEW_STATES)}")
    query = select(Defect)
    if min_score is not None:
        query = query.where(Defect.score >= min_score)
    if defect_type is not None:
        query = query.where(Defect.defect_type == defect_type)
    if state is not None:
        query = query.where(Defect.review_state == state)
    if station is not None:
        query = query.where(Defect.station_id == station)
    if since is not None or until is not None:
        query = query.join(Defect.inspection)
        if since is not None:
            query = query.where(Inspection.captured_at >= since)
        if until is not None:
            query = query.where(Inspection.captured_at < until)
    with store._transaction("listing defects", write=False) as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        page = query.options(selectinload(Defect.inspection)).order_by(Defect.id.desc())
        rows = session.scalars(page.limit(limit).offset(offset)).all()
        return int(total), [defect_view(d) for d in rows]


def get_defect(store: Store, defect_id: int) -> dict[str, Any]:
    """One defect as ``defect_view`` shows it; KeyError when there is none."""
    with store._transaction(f"reading defect {defect_id}", write=False) as session:
        defect = session.get(Defect, defect_id)
        if defect is None:
            raise KeyError(defect_id)
        return defect_view(defect)


def review(
    store: Store,
    defect_id: int,
    username: str,
    decision: str,
    defect_type: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Record an operator's decision on a defect and its audit row (with the values it replaced).

    Raises KeyError when there is no such defect, ValueError for an unknown decision.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
    with store._transaction(f"reviewing defect {defect_id}", write=True) as session:
        defect = session.get(Defect, defect_id, with_for_update=True)
        if defect is None:
            raise KeyError(defect_id)
        previous = {
            "review_state": defect.review_state,
            "defect_type": defect.defect_type,
            "note": defect.note,
            "reviewed_by": defect.reviewed_by,
        }
        now = utcnow()
        defect.review_state = decision
        defect.defect_type = defect_type if defect_type is not None else defect.defect_type
        defect.note = note if note is not None else defect.note
        defect.reviewed_by, defect.reviewed_at = username, now
        session.add(
            Review(
                defect_id=defect_id,
                username=username,
                at=now,
                decision=decision,
                defect_type=defect_type,
                note=note,
                previous=previous,
            )
        )
        session.flush()
        return defect_view(defect)


def audit_trail(store: Store, defect_id: int) -> list[dict[str, Any]]:
    with store._transaction(f"reading the reviews of defect {defect_id}", write=False) as session:
        rows = session.scalars(select(Review).where(Review.defect_id == defect_id).order_by(Review.id))
        return [
            {
                "username": r.username,
                "at": r.at.isoformat(),
                "decision": r.decision,
                "defect_type": r.defect_type,
                "note": r.note,
                "previous": r.previous,
            }
            for r in rows
        ]
