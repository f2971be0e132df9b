"""Station YAML ``explainer`` section: which vision-language model explains flagged frames, and how."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from config.base import StrictModel

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ExplainerSettings(StrictModel):
    """The LLM stage: called for flagged frames only, one call per defect episode."""

    backend: Literal["none", "openai", "transformers"] = Field(
        default="none",
        description="none (detector verdict only), openai (any OpenAI-compatible server: vLLM, Ollama, "
        "llama.cpp, TGI) or transformers (a local vision-language model)",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Model name served by the openai server, or a Hugging Face repo id / local "
        "directory for transformers",
    )
    base_url: str | None = Field(
        default=None,
        max_length=2048,
        description="openai backend: the server's base URL including /v1, e.g. http://127.0.0.1:8000/v1",
    )
    api_key_env: str = Field(
        default="LINEWATCH_EXPLAINER_API_KEY",
        max_length=100,
        description="Name of the environment variable holding the API key (never the key itself); "
        "unset variable = no key",
    )
    timeout_s: float = Field(default=60.0, gt=0, le=600, description="Seconds one request may take")
    max_retries: int = Field(
        default=2, ge=0, le=10, strict=True, description="Retries on timeouts, 429 and 5xx, with backoff"
    )
    concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        strict=True,
        description="Requests in flight at once (openai), or the generation batch size (transformers)",
    )
    max_pending: int = Field(
        default=32,
        ge=1,
        le=10_000,
        strict=True,
        description="Episodes waiting for the LLM; beyond this the oldest are skipped (recorded as "
        "'skipped: backlog')",
    )
    episode_gap: int = Field(
        default=2,
        ge=1,
        le=1000,
        strict=True,
        description="Flagged frames at most this many frames apart with overlapping regions are one "
        "defect episode, explained once",
    )
    image_size: int = Field(
        default=768, ge=64, le=4096, strict=True, description="Longer side of the images sent, in pixels"
    )
    max_new_tokens: int = Field(default=300, ge=16, le=4096, strict=True, description="Answer length cap")
    json_mode: bool = Field(
        default=True,
        description="openai: ask the server for a JSON object (response_format); turn off for servers "
        "that reject it",
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1")
        return value.strip().rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError("must be the NAME of an environment variable (letters, digits, '_'), not a key")
        return value

    @model_validator(mode="after")
    def _backend_needs(self) -> ExplainerSettings:
        if self.backend != "none" and not self.model:
            raise ValueError(f"backend {self.backend!r} needs a model")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs a base_url, e.g. http://127.0.0.1:8000/v1")
        return self

    @property
    def enabled(self) -> bool:
        return self.backend != "none"
