"""A local vision-language model (AutoProcessor + AutoModelForImageTextToText), loaded once, batched."""

from __future__ import annotations

import asyncio
import io
import logging
from functools import partial
from pathlib import Path
from typing import Any

from workers.errors import WeightsNotFoundError, WorkerError
from workers.explain.backends.base import BackendError
from workers.explain.prompt import Chat

logger = logging.getLogger(__name__)


def how_to_provide(model: str) -> str:
    return (
        f"to provide it, run `hf download {model}` on a machine with internet and copy its Hugging Face "
        "cache (~/.cache/huggingface, or HF_HOME) here, or save the model with save_pretrained to a "
        "directory and set explainer.model to that directory"
    )


def load_vlm(model: str, device: str) -> tuple[Any, Any]:
    """Processor and model from a local directory or the HF cache (hub only when allowed).

    Raises WeightsNotFoundError naming the model and how to provide it; never random weights.
    """
    import torch
    from transformers import AutoProcessor

    from workers.backbones.hf import from_cache_first

    path = Path(model).expanduser()
    is_dir = path.is_dir()
    source = str(path) if is_dir else model
    if not is_dir and (model.startswith(("/", ".", "~")) or model.count("/") > 1):
        raise WeightsNotFoundError(
            f"explainer model {model}: no such directory; give a local model directory or a hub repo id "
            "such as Qwen/Qwen2.5-VL-3B-Instruct"
        )
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        processor = from_cache_first(AutoProcessor.from_pretrained, source, is_dir)
        vlm = from_cache_first(partial(_load_model, dtype=dtype), source, is_dir)
    except OSError as e:
        where = "the directory" if is_dir else "the local Hugging Face cache or the hub"
        raise WeightsNotFoundError(
            f"explainer model {model}: not found in {where} ({e}); {how_to_provide(model)}"
        ) from e
    except ValueError as e:  # a config transformers has no image-text-to-text class for
        raise WorkerError(
            f"explainer model {model}: not a vision-language model transformers can run: {e}"
        ) from e
    vlm.to(device).eval()
    # decoder-only generation in a batch needs left padding, or short prompts continue after pads
    processor.tokenizer.padding_side = "left"
    return processor, vlm


def _load_model(source: str, *, dtype: Any, local_files_only: bool) -> Any:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, local_files_only=local_files_only)


def resolve_device(device: str) -> str:
    """auto → the first GPU when there is one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class TransformersBackend:
    """Chats arriving together are generated as one batch of up to ``batch_size`` on one device."""

    def __init__(
        self,
        model: str,
        device: str = "auto",
        *,
        batch_size: int = 2,
        max_new_tokens: int = 300,
        max_wait_ms: float = 20.0,
    ) -> None:
        self.name = model
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_wait_s = max_wait_ms / 1000
        self.processor, self.model = load_vlm(model, self.device)
        self._queue: asyncio.Queue[tuple[Chat, asyncio.Future[str]]] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # sizes of the batches generated, for tests and logs

    async def complete(self, chat: Chat) -> str:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await self._queue.put((chat, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(batch) < self.batch_size:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:  # asyncio.timeout: 3.11's wait_for can swallow a cancellation at its timeout
                    async with asyncio.timeout(left):
                        batch.append(await self._queue.get())
                except TimeoutError:
                    break
            try:
                texts = await asyncio.to_thread(self.generate, [chat for chat, _ in batch])
            except Exception as e:  # the batch fails, the stage goes on: each caller gets the error
                logger.exception("generation failed for %d chats", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(BackendError(f"{self.name}: generation failed: {e}"))
                continue
            for (_, future), text in zip(batch, texts, strict=True):
                if not future.done():
                    future.set_result(text)

    def generate(self, chats: list[Chat]) -> list[str]:
        """One padded batch through ``model.generate``; greedy, so a frame gets a stable answer."""
        import torch
        from PIL import Image

        self.batches.append(len(chats))
        texts = [
            self.processor.apply_chat_template(_messages(c), add_generation_prompt=True, tokenize=False)
            for c in chats
        ]
        images = [[Image.open(io.BytesIO(j)).convert("RGB") for j in c.images] for c in chats]
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True).to(self.device)
        if "pixel_values" in inputs:  # bf16 models on the GPU: the processor hands out float32
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        return [str(t) for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        while not self._queue.empty():  # nobody may wait forever on a closed backend
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(BackendError(f"{self.name}: backend closed"))


def _messages(chat: Chat) -> list[dict[str, Any]]:
    """Chat-template messages: an image placeholder per image, then the text (images go separately)."""
    return [
        {
            "role": turn.role,
            "content": [{"type": "image"} for _ in turn.images] + [{"type": "text", "text": turn.text}],
        }
        for turn in chat.turns
    ]
