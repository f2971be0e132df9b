"""The Store on SQLite and PostgreSQL: idempotent recording, defects, verdicts, retention, queries."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.messages import VerdictMessage
from pipeline.store import RecordOutcome, Store
from pipeline.store.models import Defect, Inspection, Review, Station
from pipeline.store.store import BadResult
from tests.pipeline.store.factories import T0, ResultFactory

EVIDENCE = {
    "line-1:2": ("evidence/line-1/2.jpg", "heatmaps/line-1/2.png"),
    "line-1:4": ("evidence/line-1/4.jpg", "heatmaps/line-1/4.png"),
}


def _defects(store: Store) -> list[Defect]:
    with Session(store.engine) as session:
        return list(session.scalars(select(Defect).order_by(Defect.station_id, Defect.seq)))


def test_record_twice_stores_each_frame_once(store: Store, result: ResultFactory) -> None:
    batch = [result(seq=s, flagged=s in (2, 4)) for s in range(1, 6)]

    first = store.record(batch, EVIDENCE)
    again = store.record(batch, EVIDENCE)  # redelivered after a crash before XACK

    assert first == RecordOutcome(inserted=5, duplicates=0, defects=2)
    assert again == RecordOutcome(inserted=0, duplicates=5, defects=0)
    assert store.count_inspections() == 5
    assert [(d.station_id, d.seq) for d in _defects(store)] == [("line-1", 2), ("line-1", 4)]


def test_a_frame_twice_in_one_batch_is_stored_once(store: Store, result: ResultFactory) -> None:
    outcome = store.record([result(seq=7, flagged=True), result(seq=7, flagged=True)])
    assert outcome == RecordOutcome(inserted=1, duplicates=1, defects=1)
    assert store.count_inspections() == 1


def test_flagged_result_becomes_a_defect_with_evidence(store: Store, result: ResultFactory) -> None:
    regions = [
        {"x": 0, "y": 0, "w": 5, "h": 5, "area": 0.02, "peak": 0.95, "position": "top left"},
        {"x": 50, "y": 50, "w": 5, "h": 5, "area": 0.01, "peak": 0.7, "position": "center"},
        {"x": 9, "y": 1, "w": 2, "h": 2, "area": 0.01, "peak": 0.6, "position": "top left"},
    ]
    store.record([result(seq=2, flagged=True, score=0.91, regions=regions), result(seq=3)], EVIDENCE)

    (defect,) = _defects(store)
    assert (defect.evidence_path, defect.heatmap_path) == EVIDENCE["line-1:2"]
    assert defect.regions == regions
    assert defect.position_words == "top left; center"
    assert defect.score == pytest.approx(0.91)
    assert (defect.verdict_status, defect.review_state) == ("pending", "unreviewed")
    assert store.flagged_seqs("line-1") == [2]
    with Session(store.engine) as session:
        inspection = session.get_one(Inspection, defect.inspection_id)
    assert inspection.captured_at == datetime.fromtimestamp(T0 + 2, UTC)
    assert inspection.captured_at.tzinfo is not None


def test_flagged_result_without_evidence_files_still_becomes_a_defect(
    store: Store, result: ResultFactory
) -> None:
    store.record([result(seq=9, flagged=True)], {})
    (defect,) = _defects(store)
    assert (defect.seq, defect.evidence_path, defect.heatmap_path) == (9, None, None)


def test_originals_fill_in_only_missing_evidence_paths(store: Store, result: ResultFactory) -> None:
    store.record([result(seq=2, flagged=True)], EVIDENCE)
    store.record([result(seq=9, flagged=True)], {})  # its evidence could not be written (full disk)
    changed = store.set_evidence_paths(
        [
            ("line-1", 2, "evidence/line-1/other.jpg"),
            ("line-1", 9, "evidence/line-1/9.jpg"),
            ("line-1", 99, "x"),
        ]
    )
    assert changed == 1  # seq 2 keeps its file, seq 99 is not recorded (yet)
    assert [(d.seq, d.evidence_path) for d in _defects(store)] == [
        (2, EVIDENCE["line-1:2"][0]),
        (9, "evidence/line-1/9.jpg"),
    ]
    assert store.set_evidence_paths([]) == 0


def test_retry_adds_a_missing_defect(store: Store, result: ResultFactory) -> None:
    # the inspection row exists but its defect does not (e.g. removed by hand, or an older build)
    store.record([result(seq=2, flagged=True)], EVIDENCE)
    with Session(store.engine) as session, session.begin():
        session.execute(delete(Defect))

    outcome = store.record([result(seq=2, flagged=True)], EVIDENCE)

    assert outcome == RecordOutcome(inserted=0, duplicates=1, defects=1)
    assert [d.evidence_path for d in _defects(store)] == [EVIDENCE["line-1:2"][0]]


def test_seq_is_unique_per_station_only(store: Store, result: ResultFactory) -> None:
    store.record([result("line-1", seq=1), result("line-2", seq=1)])
    assert store.count_inspections("line-1") == 1
    assert store.count_inspections("line-2") == 1

    with pytest.raises(IntegrityError), Session(store.engine) as session, session.begin():
        now = datetime.now(UTC)
        session.add(
            Inspection(
                station_id="line-1", seq=1, captured_at=now, inspected_at=now,
                score=0.1, flagged=False, latency_ms=1.0, worker="x",
            )
        )  # fmt: skip


def test_unknown_station_is_created_and_later_filled_in(store: Store, result: ResultFactory) -> None:
    store.record([result("line-9", seq=1)])
    store.upsert_station("line-9", "Line 9", "bottle", "id: line-9\n")
    with Session(store.engine) as session:
        station = session.get_one(Station, "line-9")
        first_update = station.updated_at
    assert (station.name, station.product, station.config_yaml) == ("Line 9", "bottle", "id: line-9\n")

    store.upsert_station("line-9", "Line 9", "bottle", "id: line-9\n")  # unchanged: no update
    with Session(store.engine) as session:
        assert session.get_one(Station, "line-9").updated_at == first_update


def _verdict(seq: int, status: str = "ok", **fields: object) -> VerdictMessage:
    return VerdictMessage(
        station_id="line-1", seq=seq, status=status, episode_seq=fields.pop("episode_seq", seq),
        explained_at=T0 + seq + 1, model="tiny-vlm", **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def test_verdict_lands_on_its_defect(store: Store, result: ResultFactory) -> None:
    early = _verdict(2, anomaly=True)
    assert store.set_verdicts([early]) == [early]  # result not recorded yet: the caller retries
    store.record([result(seq=2, flagged=True)], EVIDENCE)

    verdict = _verdict(
        2, anomaly=True, location="top left", defect_type="crack",
        description="A crack near the top left edge.", confidence=0.8, raw='{"anomaly": true}',
    )  # fmt: skip
    assert store.set_verdicts([verdict]) == []
    assert store.set_verdicts([verdict]) == []  # redelivered: harmless

    (defect,) = _defects(store)
    assert defect.verdict_status == "ok"
    assert defect.verdict_anomaly is True
    assert defect.verdict_agrees is True  # the detector flagged it and the LLM sees an anomaly too
    assert (defect.verdict_location, defect.verdict_defect_type) == ("top left", "crack")
    assert defect.verdict_confidence == pytest.approx(0.8)
    assert (defect.verdict_model, defect.verdict_episode_seq) == ("tiny-vlm", 2)
    assert defect.verdict_at == datetime.fromtimestamp(T0 + 3, UTC)


def test_both_verdicts_and_their_disagreement_are_kept(store: Store, result: ResultFactory) -> None:
    store.record([result(seq=s, flagged=True) for s in (2, 3, 4, 5)], EVIDENCE)
    store.set_verdicts(
        [
            _verdict(2, anomaly=False, location="", defect_type="none", description="ok", confidence=0.6),
            _verdict(3, "episode", episode_seq=2, note="same defect episode as frame 2"),
            _verdict(4, "unparsed", raw="I think it is fine", note="invalid answer twice"),
            _verdict(5, "skipped", note="skipped: backlog"),
        ]
    )
    rows = {d.seq: d for d in _defects(store)}
    assert (rows[2].score, rows[2].verdict_anomaly, rows[2].verdict_agrees) == (0.8, False, False)
    assert (rows[3].verdict_status, rows[3].verdict_episode_seq, rows[3].verdict_agrees) == (
        "episode",
        2,
        None,
    )
    assert (rows[4].verdict_status, rows[4].verdict_raw) == ("unparsed", "I think it is fine")
    assert (rows[5].verdict_status, rows[5].verdict_note) == ("skipped", "skipped: backlog")


def test_defects_of_stations_without_explainer_say_none(store: Store, result: ResultFactory) -> None:
    store.record([result(seq=2, flagged=True), result("line-2", seq=2, flagged=True)], unexplained={"line-2"})
    assert {d.station_id: d.verdict_status for d in _defects(store)} == {
        "line-1": "pending",
        "line-2": "none",
    }


def test_purge_removes_old_rows_and_returns_their_files(store: Store, result: ResultFactory) -> None:
    store.record([result(seq=s, flagged=s in (2, 4)) for s in range(1, 6)], EVIDENCE)
    with Session(store.engine) as session, session.begin():
        defect = session.scalars(select(Defect).where(Defect.seq == 2)).one()
        session.add(Review(defect_id=defect.id, username="ann", decision="confirmed"))

    # seq 1..3 were captured more than 30 days before "now", seq 4 and 5 less
    now = datetime.fromtimestamp(T0 + 3.5, UTC) + timedelta(days=30)
    outcome = store.purge_older_than(30, now=now)

    assert (outcome.inspections, outcome.defects, outcome.reviews) == (3, 1, 1)
    assert sorted(outcome.files) == sorted(EVIDENCE["line-1:2"])
    assert store.count_inspections() == 2
    assert store.flagged_seqs("line-1") == [4]
    assert store.purge_older_than(30, now=now).inspections == 0
    with pytest.raises(ValueError, match="positive"):
        store.purge_older_than(0)


def test_station_summary_counts_per_station(store: Store, result: ResultFactory) -> None:
    store.upsert_station("line-0", "Idle line", "cap", "")
    store.record([result("line-1", seq=s, flagged=s == 2) for s in (1, 2, 3)] + [result("line-2", seq=1)])

    summary = {s.station_id: s for s in store.station_summary()}

    assert set(summary) == {"line-0", "line-1", "line-2"}
    line1 = summary["line-1"]
    assert (line1.inspections, line1.flagged, line1.unreviewed) == (3, 1, 1)
    assert line1.last_captured_at == datetime.fromtimestamp(T0 + 3, UTC)
    idle = summary["line-0"]
    assert (idle.name, idle.inspections, idle.flagged, idle.last_captured_at) == ("Idle line", 0, 0, None)


@pytest.mark.parametrize("field", ["score", "latency_ms"])
def test_result_with_nan_is_refused_before_writing(store: Store, result: ResultFactory, field: str) -> None:
    with pytest.raises(BadResult, match=r"line-1:2: " + field) as caught:
        store.record([result(seq=1), result(seq=2, **{field: math.nan})])
    assert caught.value.frame_id == "line-1:2"
    assert store.count_inspections() == 0
