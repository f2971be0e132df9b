"""The openai backend against a real chat-completions server on loopback: every answer is handled."""

from __future__ import annotations

import base64
import json
import time

import cv2
import numpy as np
import pytest

from tests.workers.explain.chat_server import ChatServer, Reply, answer
from tests.workers.explain.conftest import flagged_result, frame_jpeg
from workers.explain.backends.openai import OpenAIBackend
from workers.explain.prompt import QUESTION, build_chat
from workers.explain.verdict import ask

DESCRIPTION = "This is a photo of a magnetic tile for anomaly detection, which should be evenly textured."


def _backend(server: ChatServer, **kw: object) -> OpenAIBackend:
    options: dict = {"timeout_s": 5.0, "max_retries": 2, "backoff_s": 0.01, "api_key": "sekret"} | kw
    return OpenAIBackend(server.url, "qwen2.5-vl-7b", **options)


def _chat():
    return build_chat(DESCRIPTION, flagged_result(seq=42), frame_jpeg(), image_size=160)


async def test_request_carries_images_description_localization_and_question(chat_server: ChatServer) -> None:
    backend = _backend(chat_server)
    outcome = await ask(backend, _chat())
    await backend.close()

    assert outcome.status == "ok" and outcome.answer is not None and outcome.answer.defect_type == "scratch"
    body = chat_server.requests[0]
    assert body["model"] == "qwen2.5-vl-7b"
    assert body["response_format"] == {"type": "json_object"}
    assert chat_server.headers[0]["Authorization"] == "Bearer sekret"
    text = chat_server.texts()
    assert DESCRIPTION in text and QUESTION in text
    assert "top left" in text and "scored this frame 0.87" in text and "2.1% of the image" in text
    images = chat_server.images()
    assert len(images) == 2  # the frame and the marked frame
    decoded = []
    for url in images:
        assert url.startswith("data:image/jpeg;base64,")
        data = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
        decoded.append(cv2.imdecode(data, cv2.IMREAD_COLOR))
    assert decoded[0].shape == (120, 160, 3)  # scaled to image_size on the longer side
    diff = np.abs(decoded[0].astype(int) - decoded[1].astype(int)).max(axis=2)
    assert diff[12:40, 17:45].max() > 100  # box and heat drawn where the region is (top left) ...
    assert diff[80:, 100:].max() < 30  # ... and not far from it


async def test_invalid_answer_is_retried_once_with_the_error(chat_server: ChatServer) -> None:
    chat_server.script.extend([answer("Yes, a scratch at the top left."), Reply()])
    backend = _backend(chat_server)
    outcome = await ask(backend, _chat())
    await backend.close()

    assert (outcome.status, outcome.requests) == ("ok", 2)
    retry = chat_server.requests[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "Yes, a scratch at the top left."}
    assert "no JSON object" in retry[-1]["content"]


async def test_invalid_twice_is_kept_as_unparsed_text(chat_server: ChatServer) -> None:
    chat_server.script.extend([answer("nonsense"), answer('{"anomaly": "dunno"}')])
    backend = _backend(chat_server)
    outcome = await ask(backend, _chat())
    await backend.close()

    assert (outcome.status, outcome.raw, outcome.requests) == ("unparsed", '{"anomaly": "dunno"}', 2)
    assert outcome.note is not None and "anomaly" in outcome.note
    assert len(chat_server.requests) == 2  # never a third try


@pytest.mark.parametrize(
    "failures",
    [
        [Reply(status=500)],
        [Reply(status=503), Reply(status=502)],
        [Reply(status=429, headers={"Retry-After": "0"})],
        [Reply(delay_s=1.5)],  # slower than the timeout below
    ],
    ids=["500", "503-502", "429", "timeout"],
)
async def test_transient_failures_are_retried_with_backoff(
    chat_server: ChatServer, failures: list[Reply]
) -> None:
    chat_server.script.extend([*failures, Reply()])
    backend = _backend(chat_server, timeout_s=0.5)
    outcome = await ask(backend, _chat())
    await backend.close()

    assert outcome.status == "ok"
    assert len(chat_server.requests) == len(failures) + 1


async def test_retry_after_is_honoured(chat_server: ChatServer) -> None:
    chat_server.script.extend([Reply(status=429, headers={"Retry-After": "0.6"}), Reply()])
    backend = _backend(chat_server)
    started = time.monotonic()
    outcome = await ask(backend, _chat())
    await backend.close()
    assert outcome.status == "ok" and time.monotonic() - started >= 0.6


@pytest.mark.parametrize(
    ("replies", "says"),
    [
        ([Reply(status=500)] * 3, "HTTP 500"),
        ([Reply(delay_s=1.0)] * 3, "timeout"),
        ([Reply(status=400)], "HTTP 400"),  # our request is wrong: retrying cannot help
    ],
    ids=["500-forever", "slow-forever", "400"],
)
async def test_out_of_retries_is_a_failed_outcome_not_a_crash(
    chat_server: ChatServer, replies: list[Reply], says: str
) -> None:
    chat_server.script.extend(replies)
    backend = _backend(chat_server, timeout_s=0.3)
    outcome = await ask(backend, _chat())
    await backend.close()

    assert outcome.status == "failed" and outcome.note is not None and says in outcome.note
    assert len(chat_server.requests) == len(replies)


async def test_unreachable_server_fails_with_its_address() -> None:
    from tests.pipeline.store.factories import closed_port

    backend = OpenAIBackend(f"http://127.0.0.1:{closed_port()}/v1", "m", max_retries=1, backoff_s=0.01)
    outcome = await ask(backend, _chat())
    await backend.close()
    assert outcome.status == "failed" and "cannot reach" in (outcome.note or "")


async def test_concurrency_limit_holds(chat_server: ChatServer) -> None:
    import asyncio

    chat_server.default = lambda body: Reply(delay_s=0.2)
    backend = _backend(chat_server, concurrency=2)
    outcomes = await asyncio.gather(*(ask(backend, _chat()) for _ in range(5)))
    await backend.close()
    assert all(o.status == "ok" for o in outcomes)
    assert chat_server.peak == 2


def test_json_mode_can_be_turned_off(chat_server: ChatServer) -> None:
    backend = OpenAIBackend(chat_server.url, "m", json_mode=False)
    assert "response_format" not in backend.payload(_chat())
    assert json.dumps(backend.payload(_chat()))  # serialisable as is
