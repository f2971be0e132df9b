"""Backends for the stations that enable an explainer, built once and shared by identical settings."""

from __future__ import annotations

import os

from config.explainer import ExplainerSettings
from config.service import ServiceSettings
from config.station import StationConfig
from workers.explain.backends.base import Backend


def api_key(cfg: ExplainerSettings, settings: ServiceSettings) -> str | None:
    """The key from the variable the station names; LINEWATCH_EXPLAINER_API_KEY goes through settings."""
    if cfg.api_key_env == "LINEWATCH_EXPLAINER_API_KEY":
        secret = settings.explainer_api_key
        return secret.get_secret_value() if secret is not None else None
    return os.environ.get(cfg.api_key_env) or None


def build_backend(cfg: ExplainerSettings, settings: ServiceSettings, device: str) -> Backend:
    assert cfg.model is not None  # the schema requires a model for every backend but none
    if cfg.backend == "openai":
        from workers.explain.backends.openai import OpenAIBackend

        assert cfg.base_url is not None
        return OpenAIBackend(
            cfg.base_url,
            cfg.model,
            api_key=api_key(cfg, settings),
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            concurrency=cfg.concurrency,
            max_tokens=cfg.max_new_tokens,
            json_mode=cfg.json_mode,
        )
    if cfg.backend == "transformers":
        from workers.explain.backends.transformers import TransformersBackend

        return TransformersBackend(
            cfg.model, device, batch_size=cfg.concurrency, max_new_tokens=cfg.max_new_tokens
        )
    raise ValueError(f"explainer backend {cfg.backend!r} makes no calls; stations using it are not explained")


def build_backends(
    stations: list[StationConfig], settings: ServiceSettings, device: str
) -> dict[str, Backend]:
    """Station id → backend for every station with an explainer; one backend per distinct setting,
    so a local model is loaded once and a server's concurrency limit holds across stations."""
    shared: dict[tuple[object, ...], Backend] = {}
    out: dict[str, Backend] = {}
    for s in stations:
        cfg = s.explainer
        if not cfg.enabled:
            continue
        # a local model is loaded once whatever the stations' other settings; a server is shared
        # by the stations that talk to it the same way
        key: tuple[object, ...] = (cfg.backend, cfg.model)
        if cfg.backend == "openai":
            key += (cfg.base_url, cfg.api_key_env, cfg.timeout_s, cfg.max_retries, cfg.concurrency)
            key += (cfg.max_new_tokens, cfg.json_mode)
        if key not in shared:
            shared[key] = build_backend(cfg, settings, device)
        out[s.id] = shared[key]
    return out
