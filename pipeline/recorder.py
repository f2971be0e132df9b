"""``linewatch recorder``: results from Redis into the SQL store, evidence files for flagged frames."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pipeline import keys, metrics, problems, streams
from pipeline.evidence import EvidenceError, write_evidence, write_original
from pipeline.messages import FrameMessage, MessageError, ResultMessage
from pipeline.store.errors import StoreUnavailable
from pipeline.store.store import BadResult, Store
from pipeline.verdict_recording import VerdictRecording

logger = logging.getLogger(__name__)

EVIDENCE_PROBLEM = "evidence"  # the problem shown while evidence files cannot be written


@dataclass(frozen=True)
class RecorderOptions:
    batch_size: int = 500  # results per transaction: bulk inserts are what keep up with many cameras
    block_ms: int = 200
    claim_idle_ms: int = 15_000
    max_deliveries: int = 10
    retry_max_s: float = 10.0  # database outage: wait at most this long between attempts
    heartbeat_ttl_s: float = 10.0
    retention_days: float | None = None  # None keeps everything
    purge_every_s: float = 3600.0
    trim_every_s: float = 10.0  # acknowledged results leave the stream this often


class Recorder:
    """Stores every result exactly once (idempotent on station+seq) and acks only after the commit."""

    def __init__(
        self,
        redis: streams.Redis,
        store: Store,
        station_ids: list[str],
        data_dir: Path,
        name: str = "recorder",
        options: RecorderOptions | None = None,
        explained: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        """``explained``: the stations with an explainer, whose verdict streams are recorded too."""
        self.r = redis
        self.store = store
        self.data_dir = data_dir
        self.name = name
        self.options = options or RecorderOptions()
        self.result_streams = [keys.results(s) for s in station_ids]
        self.verdict_streams = [keys.verdicts(s) for s in station_ids if s in explained]
        # originals of flagged frames that capture sends after the inspection-size evidence
        self.evidence_streams = [keys.evidence(s) for s in station_ids]
        self.unexplained = frozenset(station_ids) - frozenset(explained)
        self.verdicts = VerdictRecording(redis, store)
        self.recorded = 0
        self.evidence_failures = 0
        self._evidence_problem = False
        self._last_purge = 0.0
        self._last_trim = time.monotonic()
        self._last_claim = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        for stream in self.inputs:
            await streams.reconnecting(
                partial(streams.ensure_group, self.r, stream, keys.RECORD_GROUP), what=stream
            )
        while not stop.is_set():
            await streams.reconnecting(
                lambda: streams.heartbeat(self.r, "recorder", self.name, self.options.heartbeat_ttl_s),
                what="heartbeat",
            )
            entries = await streams.reconnecting(self._next_batch, what="results")
            if entries:
                await self.record(entries, stop)
            await self.verdicts.retry_if_due()
            await self.trim_if_due()
            await self.purge_if_due()

    @property
    def inputs(self) -> list[str]:
        """Every stream the recorder consumes."""
        return self.result_streams + self.verdict_streams + self.evidence_streams

    async def trim_if_due(self) -> None:
        """Results every group acknowledged are only memory now (the store has them): drop them."""
        if time.monotonic() - self._last_trim < self.options.trim_every_s:
            return
        self._last_trim = time.monotonic()
        for stream in self.inputs:
            await streams.reconnecting(partial(streams.trim_acknowledged, self.r, stream), what=stream)

    async def purge_if_due(self) -> None:
        """Apply the retention setting about once an hour: rows first, then their evidence files."""
        days = self.options.retention_days
        if days is None or time.monotonic() - self._last_purge < self.options.purge_every_s:
            return
        self._last_purge = time.monotonic()
        try:
            outcome = await asyncio.to_thread(self.store.purge_older_than, days)
        except StoreUnavailable as e:
            logger.warning("retention purge postponed: %s", e)
            return
        for rel in outcome.files:
            path = (self.data_dir / rel).resolve()
            if path.is_relative_to(self.data_dir.resolve()):
                path.unlink(missing_ok=True)
        if outcome.inspections:
            logger.info(
                "retention: deleted %d inspections, %d defects, %d files older than %g days",
                outcome.inspections,
                outcome.defects,
                len(outcome.files),
                days,
            )

    async def _next_batch(self) -> list[streams.Entry]:
        o = self.options
        entries: list[streams.Entry] = []
        # a takeover scan per stream costs round trips; a few per idle period are enough
        now = time.monotonic()
        due = now - self._last_claim >= o.claim_idle_ms / 4000
        if due:
            self._last_claim = now
        for stream in self.inputs if due else []:
            claimed = await streams.claim_stale(
                self.r, stream, keys.RECORD_GROUP, self.name, o.claim_idle_ms, o.batch_size
            )
            claimed = [e for e in claimed if not self.verdicts.holds(e)]  # waiting here already
            entries += (
                await streams.dead_letter_if_exhausted(
                    self.r, stream, keys.RECORD_GROUP, claimed, o.max_deliveries
                )
            )[0]
        entries += await streams.read_batch(
            self.r,
            keys.RECORD_GROUP,
            self.name,
            self.inputs,
            o.batch_size,
            o.block_ms,
        )
        return entries

    async def record(self, entries: list[streams.Entry], stop: asyncio.Event) -> None:
        """Store results (and evidence), then the verdicts and originals of the same batch: they
        may need those rows."""
        verdict_streams, evidence_streams = set(self.verdict_streams), set(self.evidence_streams)
        verdicts = [e for e in entries if e.stream in verdict_streams]
        originals = [e for e in entries if e.stream in evidence_streams]
        skip = verdict_streams | evidence_streams
        await self._record_results([e for e in entries if e.stream not in skip], stop)
        if verdicts:
            await self.verdicts.record(verdicts)
        if originals:
            await self._record_originals(originals, stop)

    async def _record_results(self, entries: list[streams.Entry], stop: asyncio.Event) -> None:
        if not entries:
            return
        results, good = [], []
        for entry in entries:
            try:
                results.append(ResultMessage.from_fields(entry.fields))
                good.append(entry)
            except MessageError as e:
                await streams.bury(self.r, keys.RECORD_GROUP, entry, str(e))
        evidence = await self._evidence([r for r in results if r.flagged])
        unstorable = await self._commit(results, evidence, stop)
        if unstorable is None:
            return  # stopping during an outage: the batch stays pending in Redis for next time
        # paired by position: two stations' result streams often hold the same entry id (one
        # worker writes both in one pipeline), so an entry id names no result on its own
        paired = list(zip(good, results, strict=True))
        for entry, result in paired:
            if result.id in unstorable:  # kept for a person to look at
                await streams.bury(self.r, keys.RECORD_GROUP, entry, unstorable[result.id])
        done = [entry for entry, result in paired if result.id not in unstorable]
        await streams.reconnecting(lambda: streams.ack(self.r, keys.RECORD_GROUP, done), what="ack")
        stored = [r for r in results if r.id not in unstorable]
        self.recorded += len(stored)
        metrics.observe_stored(stored, time.time())

    async def _commit(
        self, results: list[ResultMessage], evidence: dict[str, tuple[str, str]], stop: asyncio.Event
    ) -> dict[str, str] | None:
        """Retry until the database takes the batch: results wait in the stream meanwhile, nothing is
        lost. Returns the frames no database would take (frame id -> why), or None when stopping."""
        delay = 0.5
        unstorable: dict[str, str] = {}
        while True:
            try:
                outcome = await asyncio.to_thread(self.store.record, results, evidence, self.unexplained)
                metrics.DUPLICATE_RESULTS.inc(outcome.duplicates)
                return unstorable
            except StoreUnavailable as e:
                metrics.STORE_RETRIES.inc()
                logger.warning(
                    "database unavailable (%s); %d results wait, retrying in %.1fs", e, len(results), delay
                )
            except BadResult as e:  # one bad row must not block the rest: store the others
                logger.error("unstorable result, dead-lettered: %s", e, extra={"frame": e.frame_id})
                unstorable[e.frame_id] = str(e)
                results = [r for r in results if r.id != e.frame_id]
                continue
            if stop.is_set():
                return None
            await asyncio.sleep(delay)
            delay = min(self.options.retry_max_s, delay * 2)

    async def _evidence(self, flagged: list[ResultMessage]) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for res in flagged:
            if not res.frame_jpeg:
                await self._evidence_failed(res.station_id, res.id, "flagged result carries no frame")
                continue
            try:
                out[res.id] = await asyncio.to_thread(write_evidence, self.data_dir, res)
            except EvidenceError as e:
                # disk full or read-only: the inspection row matters more than the picture
                await self._evidence_failed(res.station_id, res.id, str(e))
        if out:
            await self._evidence_written()
        return out

    async def _evidence_failed(self, station_id: str, frame_id: str, error: str) -> None:
        """Log, count and show on the dashboard that evidence is missing; the row is stored anyway."""
        logger.error("evidence not written: %s", error, extra={"station": station_id, "frame": frame_id})
        self.evidence_failures += 1
        self._evidence_problem = True
        metrics.EVIDENCE_FAILURES.inc()
        message = f"evidence files cannot be written under {self.data_dir}: {error}"
        await streams.reconnecting(
            partial(problems.report, self.r, EVIDENCE_PROBLEM, message, role=self.name), what="problems"
        )

    async def _evidence_written(self) -> None:
        if self._evidence_problem:  # only after a failure: clearing costs a round trip
            await streams.reconnecting(partial(problems.clear, self.r, EVIDENCE_PROBLEM), what="problems")
            self._evidence_problem = False

    async def _record_originals(self, entries: list[streams.Entry], stop: asyncio.Event) -> None:
        """Replace inspection-size evidence by capture's originals (the batch's files in one thread
        hop, the paths in one transaction); acked once written, or failed: the inspection-size
        evidence stands, and a full disk is reported like any evidence failure."""
        frames, done = [], []
        for entry in entries:
            try:
                frames.append(FrameMessage.from_fields(entry.fields))
            except MessageError as e:
                await streams.bury(self.r, keys.RECORD_GROUP, entry, str(e))
                continue
            done.append(entry)
        written = await asyncio.to_thread(_write_originals, self.data_dir, frames)
        for frame, outcome in written:
            if isinstance(outcome, EvidenceError):
                await self._evidence_failed(frame.station_id, frame.id, str(outcome))
        paths = [(f.station_id, f.seq, p) for f, p in written if isinstance(p, str)]
        if not await self._commit_evidence_paths(paths, stop):
            return  # stopping during an outage: the entries stay pending for next time
        await streams.reconnecting(lambda: streams.ack(self.r, keys.RECORD_GROUP, done), what="ack")

    async def _commit_evidence_paths(self, paths: list[tuple[str, int, str]], stop: asyncio.Event) -> bool:
        """Defects stored without evidence (disk full then) get their original's path. False when
        stopping during an outage (as ``_commit``: a stop must not wait for the database)."""
        delay = 0.5
        while paths:
            try:
                await asyncio.to_thread(self.store.set_evidence_paths, paths)
                return True
            except StoreUnavailable as e:
                logger.warning("database unavailable (%s); %d originals' paths wait", e, len(paths))
            if stop.is_set():
                return False
            await asyncio.sleep(delay)
            delay = min(self.options.retry_max_s, delay * 2)
        return True


Written = tuple[FrameMessage, str | EvidenceError]  # an original and its file's path, or why not


def _write_originals(data_dir: Path, frames: list[FrameMessage]) -> list[Written]:
    out: list[Written] = []
    for frame in frames:
        try:
            out.append((frame, write_original(data_dir, frame)))
        except EvidenceError as e:
            out.append((frame, e))
    return out
