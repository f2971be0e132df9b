"""One question to the model and what comes back: a validated answer, unparsed text, or a failure."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pipeline.messages import ResultMessage, VerdictMessage
from workers.explain.answer import Answer, AnswerError, parse_answer
from workers.explain.backends.base import Backend, BackendError
from workers.explain.prompt import Chat, correction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What asking the model gave: status ok/unparsed/failed, the answer, the raw text, a note."""

    status: str
    answer: Answer | None = None
    raw: str | None = None
    note: str | None = None
    requests: int = 0


async def ask(backend: Backend, chat: Chat) -> Outcome:
    """Ask; an invalid answer is retried once with the validation error, then kept as raw text.

    Never raises for what the model or server does: a server that keeps failing is a ``failed``
    outcome carrying the error, so the stage goes on and the frame's record says why.
    """
    requests = 0
    try:
        requests += 1
        text = await backend.complete(chat)
        try:
            return Outcome("ok", parse_answer(text), raw=text, requests=requests)
        except AnswerError as first:
            logger.info("%s: invalid answer (%s); asking once more", chat.frame_id, first)
            requests += 1
            try:
                retry = await backend.complete(chat.followed_by(text, correction(str(first))))
            except BackendError as e:  # keep the first text: it is all the model said
                note = f"invalid answer ({first}); the retry failed: {e}"
                return Outcome("unparsed", raw=text, note=note, requests=requests)
            try:
                return Outcome("ok", parse_answer(retry), raw=retry, requests=requests)
            except AnswerError as second:
                return Outcome(
                    "unparsed", raw=retry, note=f"invalid answer twice: {second}", requests=requests
                )
    except BackendError as e:
        logger.warning("%s: no verdict from %s: %s", chat.frame_id, backend.name, e)
        return Outcome("failed", note=str(e), requests=requests)


def verdict_message(
    result: ResultMessage, outcome: Outcome, model: str, started: float, episode_seq: int | None = None
) -> VerdictMessage:
    """The verdict for ``result`` from an outcome; ``started`` is time.monotonic() at the start."""
    answer = outcome.answer
    return VerdictMessage(
        station_id=result.station_id,
        seq=result.seq,
        status=outcome.status,
        episode_seq=result.seq if episode_seq is None else episode_seq,
        explained_at=time.time(),
        anomaly=answer.anomaly if answer else None,
        location=answer.location if answer else None,
        defect_type=answer.defect_type if answer else None,
        description=answer.description if answer else None,
        confidence=answer.confidence if answer else None,
        raw=outcome.raw,
        note=outcome.note,
        model=model,
        latency_ms=round((time.monotonic() - started) * 1000, 1),
    )
