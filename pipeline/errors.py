"""Errors of the streaming side: one base class, one subclass per kind of failure."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error raised on purpose by ``pipeline/``."""


class SourceError(PipelineError):
    """A camera source that cannot be opened or read; the message names the source and why."""
