"""A real OpenAI-compatible chat-completions server on loopback, scripted per test.

Each request takes the next behaviour from the script (the default answers a valid verdict), so
a test can have the server answer JSON, prose, slowly, 500 or 429, and count what it was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VALID = {
    "anomaly": True,
    "location": "top left",
    "defect_type": "scratch",
    "description": "A thin scratch across the top left of the tile.",
    "confidence": 0.9,
}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content: str | None = json.dumps(VALID)  # the assistant message text (status 200 only)
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def answer(content: str | dict[str, Any]) -> Reply:
    return Reply(content=content if isinstance(content, str) else json.dumps(content))


class ChatServer:
    """Records every request body; ``script`` holds the replies to give, in order."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.script: deque[Reply] = deque()
        self.default: Callable[[dict[str, Any]], Reply] = lambda body: Reply()
        self._lock = threading.Lock()
        self.url = ""
        self.in_flight = 0
        self.peak = 0  # most requests handled at once

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def next_reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            return self.script.popleft() if self.script else self.default(body)

    def texts(self, i: int = -1) -> str:
        """All text parts of request ``i``."""
        out = []
        for message in self.requests[i]["messages"]:
            content = message["content"]
            if isinstance(content, str):
                out.append(content)
            else:
                out += [p["text"] for p in content if p["type"] == "text"]
        return "\n".join(out)

    def images(self, i: int = -1) -> list[str]:
        return [
            p["image_url"]["url"]
            for m in self.requests[i]["messages"]
            if isinstance(m["content"], list)
            for p in m["content"]
            if p["type"] == "image_url"
        ]


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet test output
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length))
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            reply = server.next_reply(body, dict(self.headers))
            server.enter()
            try:
                time.sleep(reply.delay_s)
            finally:
                server.leave()
            if reply.status != 200:
                self._send(reply.status, {"error": {"message": "scripted failure"}}, reply.headers)
                return
            self._send(
                200,
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.content},
                            "finish_reason": "stop",
                        }
                    ],
                },
            )

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left: what a slow server sees too

    return Handler


@contextmanager
def running_chat_server() -> Iterator[ChatServer]:
    chat = ChatServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(chat))
    httpd.daemon_threads = True
    chat.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield chat
    finally:
        httpd.shutdown()
        httpd.server_close()
