"""The one interface every explainer backend implements."""

from __future__ import annotations

from typing import Protocol

from workers.errors import WorkerError
from workers.explain.prompt import Chat


class BackendError(WorkerError):
    """The model could not answer (server down, kept timing out, out of retries); the frame is kept."""


class Backend(Protocol):
    """Completes chats with a vision-language model.

    ``complete`` may be awaited from many tasks at once; the backend bounds its own concurrency
    (HTTP requests in flight, or generation batch size) so callers need not.
    """

    name: str  # the model, for the record

    async def complete(self, chat: Chat) -> str:
        """The model's reply text; raises BackendError when no reply could be had."""
        ...

    async def close(self) -> None:
        """Release connections or memory."""
        ...
