"""A station's decoder from its backbone, prompts and optional checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

from workers.backbones.base import Backbone
from workers.backbones.openclip import OpenClipBackbone
from workers.decoder.checkpoint import read_checkpoint
from workers.decoder.prompts import PromptSet
from workers.decoder.text_features import TextFeatureCache
from workers.decoder.zero_shot import ZeroShotDecoder, default_projections
from workers.errors import DecoderError

logger = logging.getLogger(__name__)


def build_decoder(
    backbone: Backbone,
    prompts: PromptSet,
    checkpoint: Path | None = None,
    cache: TextFeatureCache | None = None,
) -> ZeroShotDecoder:
    """Trained projections when ``checkpoint`` is given, else CLIP's own; text encoded once per prompts."""
    if not isinstance(backbone, OpenClipBackbone):
        raise DecoderError(
            f"{backbone.spec}: the zero-shot decoder needs an open_clip: backbone (text tower)"
        )
    if checkpoint is None:
        projections = default_projections(backbone)
    else:
        loaded = read_checkpoint(checkpoint, backbone)
        projections = loaded.projections
        logger.info(
            "decoder %s: trained %d epoch(s) on '%s' prompts",
            checkpoint,
            loaded.training.epochs_done,
            loaded.prompts.product,
        )
    text = (cache or TextFeatureCache()).get(backbone, prompts)
    return ZeroShotDecoder(projections, text)
