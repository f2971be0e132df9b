"""Explainer backends behind one interface: OpenAI-compatible servers and local transformers models."""

from workers.explain.backends.base import Backend, BackendError

__all__ = ["Backend", "BackendError"]
