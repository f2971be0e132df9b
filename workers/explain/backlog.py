"""A bounded queue of frames waiting for the LLM: when full, the oldest give way to the newest."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """FIFO of pending jobs with a bound; ``push`` returns what it pushed out (to record as skipped).

    Dropping the oldest keeps the verdicts about what is on the line now, and the reader never
    waits on the LLM, so neither Redis nor the localizer upstream is ever slowed down.
    """

    def __init__(self, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()

    def push(self, item: T) -> list[T]:
        self._items.append(item)
        dropped = []
        while len(self._items) > self.max_pending:
            dropped.append(self._items.popleft())
        self._ready.set()
        return dropped

    async def pop(self) -> T:
        """The oldest pending job, waiting for one."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def drain(self) -> list[T]:
        """Everything still pending (at shutdown: left un-acked for the next run)."""
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)
