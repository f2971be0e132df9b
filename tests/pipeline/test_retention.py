"""Retention: the recorder deletes old inspections, their defects and their evidence files."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.recorder import Recorder, RecorderOptions
from pipeline.store.schema import upgrade
from pipeline.store.store import Store
from tests.pipeline.store.factories import make_result


async def test_old_rows_and_evidence_go_recent_ones_stay(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lw.db'}"
    upgrade(url)
    store = Store.open(url)
    old = make_result("line-1", 1, flagged=True)  # captured in 2025
    now = time.time()
    recent = make_result("line-1", 2, flagged=True, captured_at=now, inspected_at=now)
    files = {}
    for res in (old, recent):
        ev = tmp_path / "evidence" / "line-1" / f"{res.seq}.jpg"
        ev.parent.mkdir(parents=True, exist_ok=True)
        ev.write_bytes(b"jpeg")
        files[res.seq] = ev
    store.record(
        [old, recent],
        {r.id: (f"evidence/line-1/{r.seq}.jpg", f"evidence/line-1/{r.seq}.jpg") for r in (old, recent)},
    )
    outside = tmp_path.parent / "keep-me.txt"
    outside.write_text("not ours")

    rec = Recorder(
        None, store, ["line-1"], tmp_path, options=RecorderOptions(retention_days=30, purge_every_s=0)
    )  # type: ignore[arg-type]
    await rec.purge_if_due()

    assert store.count_inspections("line-1") == 1
    assert store.flagged_seqs("line-1") == [2]
    assert not files[1].exists() and files[2].exists()
    assert outside.exists()
    store.close()


async def test_no_retention_keeps_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lw.db'}"
    upgrade(url)
    store = Store.open(url)
    store.record([make_result("line-1", 1)])
    rec = Recorder(
        None, store, ["line-1"], tmp_path, options=RecorderOptions(retention_days=None, purge_every_s=0)
    )  # type: ignore[arg-type]
    await rec.purge_if_due()
    assert store.count_inspections("line-1") == 1
    store.close()
