"""The transformers backend, run through its real loading and generation code on a tiny random VLM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.workers.explain.conftest import flagged_result, frame_jpeg
from tests.workers.explain.tiny_vlm import save_tiny_qwen2_vl
from workers.errors import WeightsNotFoundError
from workers.explain.backends.transformers import TransformersBackend
from workers.explain.prompt import build_chat
from workers.explain.verdict import ask


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"))


async def test_nonsense_from_a_random_model_is_kept_as_unparsed_text(tiny_vlm: Path) -> None:
    backend = TransformersBackend(str(tiny_vlm), "cpu", batch_size=4, max_new_tokens=12)
    chats = [build_chat("A tile.", flagged_result(seq=s), frame_jpeg(s), image_size=96) for s in (1, 2, 3)]
    outcomes = await asyncio.gather(*(ask(backend, c) for c in chats))
    await backend.close()

    for outcome in outcomes:  # random weights answer gibberish: retried once, then kept verbatim
        assert (outcome.status, outcome.requests) == ("unparsed", 2)
        assert isinstance(outcome.raw, str) and outcome.note and "invalid answer twice" in outcome.note
    # the three first questions arrived together and went through generate() as one batch
    assert backend.batches[0] == 3 and sum(backend.batches) == 6


def test_generate_sees_both_images_and_the_prompt(tiny_vlm: Path) -> None:
    backend = TransformersBackend(str(tiny_vlm), "cpu", batch_size=2, max_new_tokens=5)
    chat = build_chat("A tile.", flagged_result(seq=1), frame_jpeg(), image_size=96)
    text = backend.processor.apply_chat_template(
        [{"role": t.role, "content": [{"type": "image"}] * len(t.images) + [{"type": "text", "text": t.text}]}
         for t in chat.turns],
        add_generation_prompt=True,
        tokenize=False,
    )  # fmt: skip
    assert text.count("<|vision_start|>") == 2 and "Is there any anomaly in the image?" in text
    (out,) = backend.generate([chat])
    assert isinstance(out, str)


def test_missing_weights_name_the_model_and_how_to_provide_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=r"(?s)Qwen/Qwen2\.5-VL-3B-Instruct.*hf download"):
        TransformersBackend("Qwen/Qwen2.5-VL-3B-Instruct", "cpu")
    with pytest.raises(WeightsNotFoundError, match="no such directory"):
        TransformersBackend(str(tmp_path / "nowhere" / "model"), "cpu")
