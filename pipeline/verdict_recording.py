"""The recorder's half for explainer verdicts: onto their defect rows, waiting when they come early."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from pipeline import keys, streams
from pipeline.messages import MessageError, VerdictMessage
from pipeline.store.errors import StoreUnavailable
from pipeline.store.store import Store

logger = logging.getLogger(__name__)


@dataclass
class _Waiting:
    entry: streams.Entry
    verdict: VerdictMessage
    since: float


class VerdictRecording:
    """Stores verdicts and acks them after the commit.

    A verdict can arrive before the recorder has stored its frame (the explainer answers
    "same episode" at once). Such verdicts stay un-acked and wait here, retried about once a
    second; after ``max_wait_s`` without a defect row (its result was dead-lettered, or never
    flagged) they go to the dead-letter stream with the reason.
    """

    def __init__(self, redis: streams.Redis, store: Store, max_wait_s: float = 600.0) -> None:
        self.r = redis
        self.store = store
        self.max_wait_s = max_wait_s
        self.stored = 0
        # keyed by (stream, entry id): two stations' verdict streams often hold the same entry id
        self.waiting: dict[tuple[str, str], _Waiting] = {}
        self._last_retry = 0.0

    def holds(self, entry: streams.Entry) -> bool:
        return (entry.stream, entry.id) in self.waiting

    async def record(self, entries: list[streams.Entry]) -> None:
        """Store new verdict entries (bad ones are dead-lettered); early ones start waiting."""
        now = time.monotonic()
        for entry in entries:
            try:
                verdict = VerdictMessage.from_fields(entry.fields)
            except MessageError as e:
                await streams.bury(self.r, keys.RECORD_GROUP, entry, str(e))
                continue
            self.waiting.setdefault((entry.stream, entry.id), _Waiting(entry, verdict, now))
        await self._attempt()

    async def retry_if_due(self) -> None:
        if self.waiting and time.monotonic() - self._last_retry >= 1.0:
            await self._attempt()

    async def _attempt(self) -> None:
        self._last_retry = time.monotonic()
        if not self.waiting:
            return
        pending = list(self.waiting.values())
        try:
            early = await asyncio.to_thread(self.store.set_verdicts, [w.verdict for w in pending])
        except StoreUnavailable as e:
            logger.warning("database unavailable (%s); %d verdicts wait", e, len(pending))
            return
        early_ids = {v.id for v in early}
        done = [w for w in pending if w.verdict.id not in early_ids]
        if done:
            await streams.reconnecting(
                lambda: streams.ack(self.r, keys.RECORD_GROUP, [w.entry for w in done]), what="ack"
            )
            self.stored += len(done)
        for w in done:
            del self.waiting[(w.entry.stream, w.entry.id)]
        for w in [w for w in pending if w.verdict.id in early_ids]:
            if time.monotonic() - w.since > self.max_wait_s:
                reason = f"no defect row for {w.verdict.id} after {self.max_wait_s:.0f} s"
                await streams.bury(self.r, keys.RECORD_GROUP, w.entry, reason)
                del self.waiting[(w.entry.stream, w.entry.id)]
