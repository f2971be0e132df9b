"""Ending asyncio tasks whose cancellation a library may swallow.

On Python 3.11, ``asyncio.wait_for`` drops a cancellation that lands in the loop turn in which the
operation it waits for finishes (3.12 rebuilt ``wait_for`` on ``asyncio.timeout``, which does not).
redis-py wraps the send of every command in ``wait_for``, so a task cancelled while it talks to Redis
may simply go on: here, 85 % of single cancels of a task looping on XADD were lost. Cancelling such a
task once and waiting for it can wait forever; CI caught the capture role doing that at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

EVERY_TURN = 20  # loop turns on which a cancellation is repeated before backing off
RECANCEL_EVERY_S = 0.5  # the longest wait between repeats after those


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], *, every_s: float = RECANCEL_EVERY_S) -> None:
    """Cancel ``tasks`` and return once every one has ended. Their exceptions are retrieved, not
    raised.

    The cancellation is repeated on each of the next loop turns, as anyio's cancel scopes do: one
    lost at a send finds the task at its next await (a task looping on XADD ends within 3 turns,
    where repeats 1 ms apart still took up to 4 s). A task still running after those turns (one
    in a long shielded cleanup) is cancelled again after 1 ms, 2 ms ... up to every ``every_s``.
    Cleanup that must finish is therefore shielded (``StationCapture.stop``), or the task is asked
    to stop first and cancelled only if it did not (the capture role).
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    turns, wait = 0, 0.001
    while pending:
        for t in pending:
            t.cancel()
        if turns < EVERY_TURN:
            await asyncio.sleep(0)
            pending = {t for t in pending if not t.done()}
        else:
            _, pending = await asyncio.wait(pending, timeout=wait)
            wait = min(every_s, wait * 2)
        turns += 1
    for t in tasks:
        if not t.cancelled():
            t.exception()  # retrieved: no "exception was never retrieved" at garbage collection
