"""``linewatch explain``: flagged results → one LLM verdict per defect episode → verdicts stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from functools import partial

from config.station import StationConfig
from pipeline import keys, metrics, streams
from pipeline.cancelling import cancel_and_wait
from pipeline.messages import MessageError, ResultMessage, VerdictMessage
from workers.explain.backends.base import Backend
from workers.explain.backlog import Backlog
from workers.explain.episodes import EpisodeTracker
from workers.explain.prompt import build_chat
from workers.explain.verdict import Outcome, ask, verdict_message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainOptions:
    batch_size: int = 64  # flagged entries per read; reading is cheap, the LLM is the slow part
    block_ms: int = 1000
    claim_idle_ms: int = 60_000  # a dead explainer's frames are taken over after this
    max_deliveries: int = 5
    verdicts_maxlen: int = 100_000
    heartbeat_ttl_s: float = 10.0
    drain_s: float = 10.0  # at stop, in-flight questions get this long to finish


@dataclass(frozen=True)
class _Job:
    entry: streams.Entry
    result: ResultMessage
    station: StationConfig


def frame_for(message: ResultMessage) -> bytes | None:
    """The full-size JPEG of a flagged frame, which the worker puts on flagged results; None when
    the message carries none (a result from an older worker)."""
    return bytes(message.frame_jpeg) or None


class Explainer:
    """Reads flagged frames without ever waiting on the LLM; questions go through bounded backlogs.

    Each station has its own backlog (``explainer.max_pending``) and ``explainer.concurrency``
    askers; a backend shared by stations bounds its own concurrency. A frame is acked only after
    its verdict is in the verdicts stream; frames still waiting at stop stay pending for the next run.
    """

    def __init__(
        self,
        redis: streams.Redis,
        stations: list[StationConfig],
        backends: dict[str, Backend],
        name: str,
        options: ExplainOptions | None = None,
    ) -> None:
        missing = [s.id for s in stations if s.id not in backends]
        if missing:
            raise ValueError(f"no explainer backend for stations {', '.join(missing)}")
        self.r = redis
        self.stations = {keys.flagged(s.id): s for s in stations}
        self.backends = backends
        self.name = name
        self.options = options or ExplainOptions()
        self.tracker = EpisodeTracker()
        self.backlogs = {s.id: Backlog[_Job](s.explainer.max_pending) for s in stations}
        self.counts = {"asked": 0, "requests": 0, "episode": 0, "skipped": 0, "failed": 0, "dead": 0}
        # (stream, entry id) of entries in a backlog or being asked: never claimed back (entry ids
        # alone repeat across stations' streams)
        self._held: set[tuple[str, str]] = set()
        self._busy = 0
        self._idle = asyncio.Event()
        self._last_claim = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        for stream in self.stations:
            await streams.reconnecting(
                partial(streams.ensure_group, self.r, stream, keys.EXPLAIN_GROUP), what=stream
            )
        askers = [
            asyncio.create_task(self._asker(s))
            for s in self.stations.values()
            for _ in range(s.explainer.concurrency)
        ]
        logger.info("explainer %s on %s", self.name, ", ".join(s.id for s in self.stations.values()))
        try:
            while not stop.is_set():
                await streams.reconnecting(
                    lambda: streams.heartbeat(self.r, "explain", self.name, self.options.heartbeat_ttl_s),
                    what="heartbeat",
                )
                for entry in await streams.reconnecting(self._next_batch, what="flagged"):
                    await self.take(entry)
        finally:
            await self._shutdown(askers)

    async def take(self, entry: streams.Entry) -> None:
        """Route one flagged entry: follower of an episode, new episode into the backlog, or dead letter."""
        station = self.stations[entry.stream]
        try:
            result = ResultMessage.from_fields(entry.fields)
            if result.station_id != station.id:
                raise MessageError(f"result of station {result.station_id!r} on the stream of {station.id!r}")
        except MessageError as e:
            await streams.bury(self.r, keys.EXPLAIN_GROUP, entry, str(e))
            self.counts["dead"] += 1
            return
        place = self.tracker.assign(result, gap=station.explainer.episode_gap)
        if not place.is_head:
            outcome = Outcome("episode", note=f"same defect episode as frame {place.head}")
            await self._publish(entry, verdict_message(result, outcome, "", time.monotonic(), place.head))
            self.counts["episode"] += 1
            return
        self._held.add((entry.stream, entry.id))
        for old in self.backlogs[station.id].push(_Job(entry, result, station)):
            logger.warning(
                "%s: skipped, the LLM is behind (backlog of %d)",
                old.result.id,
                len(self.backlogs[station.id]),
            )
            outcome = Outcome("skipped", note="skipped: backlog")
            await self._publish(old.entry, verdict_message(old.result, outcome, "", time.monotonic()))
            self.counts["skipped"] += 1

    async def _asker(self, station: StationConfig) -> None:
        backlog, backend = self.backlogs[station.id], self.backends[station.id]
        while True:
            job = await backlog.pop()
            self._busy += 1
            self._idle.clear()
            try:
                verdict = await self._explain(job, backend)
                await self._publish(job.entry, verdict)
            except Exception:  # a bug must not stop the stage: the frame stays pending for takeover
                logger.exception("%s: explaining failed; left pending", job.result.id)
                self._held.discard((job.entry.stream, job.entry.id))
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

    async def _explain(self, job: _Job, backend: Backend) -> VerdictMessage:
        started = time.monotonic()
        frame = frame_for(job.result)
        if frame is None:
            logger.error("%s: flagged result carries no frame to show the LLM", job.result.id)
            outcome = Outcome("skipped", note="skipped: no frame in the flagged result")
            self.counts["skipped"] += 1
            return verdict_message(job.result, outcome, backend.name, started)
        cfg = job.station.explainer
        try:
            # decoding, drawing and two JPEG encodes: off the event loop, which also reads and acks
            chat = await asyncio.to_thread(
                build_chat, job.station.product.image_description(), job.result, frame, cfg.image_size
            )
        except ValueError as e:
            self.counts["skipped"] += 1
            return verdict_message(
                job.result, Outcome("skipped", note=f"skipped: {e}"), backend.name, started
            )
        outcome = await ask(backend, chat)
        metrics.observe_explanation(job.station.id, time.monotonic() - started, outcome.status)
        self.counts["asked"] += 1
        self.counts["requests"] += outcome.requests
        self.counts["failed"] += outcome.status == "failed"
        return verdict_message(job.result, outcome, backend.name, started)

    async def _publish(self, entry: streams.Entry, verdict: VerdictMessage) -> None:
        """Verdict into its stream, then ack: a crash in between repeats the verdict, never loses it."""
        fields = verdict.to_fields()
        maxlen = self.options.verdicts_maxlen
        stream = keys.verdicts(verdict.station_id)
        await streams.reconnecting(lambda: streams.add(self.r, stream, fields, maxlen), what=stream)
        await streams.reconnecting(lambda: streams.ack(self.r, keys.EXPLAIN_GROUP, [entry]), what="ack")
        self._held.discard((entry.stream, entry.id))

    async def _next_batch(self) -> list[streams.Entry]:
        o = self.options
        entries: list[streams.Entry] = []
        now = time.monotonic()
        if now - self._last_claim >= o.claim_idle_ms / 4000:
            self._last_claim = now
            for stream in self.stations:
                claimed = await streams.claim_stale(
                    self.r, stream, keys.EXPLAIN_GROUP, self.name, o.claim_idle_ms, o.batch_size
                )
                # ours already (waiting in a backlog, or being asked): processing them again would double
                claimed = [e for e in claimed if (e.stream, e.id) not in self._held]
                ok, dead = await streams.dead_letter_if_exhausted(
                    self.r, stream, keys.EXPLAIN_GROUP, claimed, o.max_deliveries
                )
                entries += ok
                self.counts["dead"] += dead
        entries += await streams.read_batch(
            self.r, keys.EXPLAIN_GROUP, self.name, list(self.stations), o.batch_size, o.block_ms
        )
        return entries

    async def _shutdown(self, askers: list[asyncio.Task[None]]) -> None:
        for backlog in self.backlogs.values():
            backlog.drain()  # un-acked in Redis: the next run takes them over
        if self._busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.options.drain_s)
        await cancel_and_wait(askers)  # they write to Redis: one cancel may be lost
        logger.info("explainer %s stopped: %s", self.name, self.counts)
