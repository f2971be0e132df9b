"""OpenAI-compatible chat completions (vLLM, Ollama, llama.cpp server, TGI) with image input."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from typing import Any

import httpx

from workers.explain.backends.base import BackendError
from workers.explain.prompt import Chat

logger = logging.getLogger(__name__)

#: answers worth another try: rate limiting and server-side trouble; other 4xx are our mistake
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0


class OpenAIBackend:
    """One HTTP client per server; at most ``concurrency`` requests in flight across all stations."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        concurrency: int = 2,
        max_tokens: int = 300,
        json_mode: bool = True,
        backoff_s: float = 0.5,
    ) -> None:
        self.name = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.backoff_s = backoff_s
        self._slots = asyncio.Semaphore(concurrency)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=concurrency),
        )

    def payload(self, chat: Chat) -> dict[str, Any]:
        """The request body: images as base64 data URLs ahead of each message's text."""
        messages: list[dict[str, Any]] = []
        for turn in chat.turns:
            if not turn.images:
                messages.append({"role": turn.role, "content": turn.text})
                continue
            parts: list[dict[str, Any]] = [
                {"type": "image_url", "image_url": {"url": _data_url(jpeg)}} for jpeg in turn.images
            ]
            parts.append({"type": "text", "text": turn.text})
            messages.append({"role": turn.role, "content": parts})
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": 0,  # a verdict, not a story: the same frame should get the same answer
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    async def complete(self, chat: Chat) -> str:
        body = self.payload(chat)
        async with self._slots:
            for attempt in range(self.max_retries + 1):
                last = attempt == self.max_retries
                try:
                    reply = await self._client.post(self.url, json=body)
                except httpx.TimeoutException as e:
                    problem, wait = f"no answer within the timeout ({type(e).__name__})", None
                except httpx.TransportError as e:
                    problem, wait = f"cannot reach {self.url}: {e!r}", None
                else:
                    if reply.status_code == 200:
                        return _reply_text(reply, self.url)
                    problem = f"HTTP {reply.status_code} from {self.url}: {reply.text[:300]!r}"
                    if reply.status_code not in RETRY_STATUSES:
                        raise BackendError(problem)
                    wait = _retry_after(reply)
                if last:
                    raise BackendError(f"{chat.frame_id}: {problem} (after {attempt + 1} attempts)")
                delay = wait if wait is not None else self.backoff_s * 2**attempt * random.uniform(0.8, 1.2)
                logger.warning("%s: %s; retry %d in %.1f s", chat.frame_id, problem, attempt + 1, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    async def close(self) -> None:
        await self._client.aclose()


def _data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _reply_text(reply: httpx.Response, url: str) -> str:
    """The first choice's message text; a 200 without one is a server bug worth naming."""
    try:
        content = reply.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise BackendError(
            f"{url} answered 200 without choices[0].message.content: {reply.text[:300]!r}"
        ) from e
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def _retry_after(reply: httpx.Response) -> float | None:
    value = reply.headers.get("retry-after")
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value))) if value else None
    except ValueError:
        return None  # an HTTP date: rare from LLM servers; the usual backoff will do
