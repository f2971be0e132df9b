"""Text features of the normal and abnormal states: prompt ensembles encoded once, averaged per state."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workers.backbones.openclip import OpenClipBackbone
from workers.decoder.prompts import PromptSet


def encode_state(backbone: OpenClipBackbone, sentences: list[str], chunk: int = 256) -> torch.Tensor:
    """The mean of the L2-normalised sentence embeddings, L2-normalised again: one (D,) vector."""
    with torch.no_grad():  # not inference_mode: training uses the result in autograd graphs
        parts = [
            F.normalize(backbone.encode_text(backbone.tokenize(sentences[i : i + chunk])).float(), dim=-1)
            for i in range(0, len(sentences), chunk)
        ]
    return F.normalize(torch.cat(parts).mean(dim=0), dim=-1)


def text_features(backbone: OpenClipBackbone, prompts: PromptSet) -> torch.Tensor:
    """(2, D) float32 on the backbone's device: row 0 the normal state, row 1 the abnormal one."""
    return torch.stack(
        [encode_state(backbone, prompts.normal_sentences), encode_state(backbone, prompts.abnormal_sentences)]
    )


class TextFeatureCache:
    """Encodes each prompt set once per backbone: stations of one product share the result."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, PromptSet], torch.Tensor] = {}

    def get(self, backbone: OpenClipBackbone, prompts: PromptSet) -> torch.Tensor:
        key = (backbone.spec, prompts)
        if key not in self._cache:
            self._cache[key] = text_features(backbone, prompts)
        return self._cache[key]
