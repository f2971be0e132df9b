"""Prompt ensembles of normal and abnormal states for a product (AnomalyGPT / WinCLIP wording)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

#: AnomalyGPT's state phrases; "{}" is the product name
NORMAL_STATES = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ABNORMAL_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
#: the templates AnomalyGPT takes from WinCLIP; each state phrase is put into every one
TEMPLATES = (
    "a cropped photo of the {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)


@dataclass(frozen=True)
class PromptSet:
    """What the text side of a decoder is built from: product name, state phrases, templates."""

    product: str
    normal_states: tuple[str, ...] = NORMAL_STATES
    abnormal_states: tuple[str, ...] = ABNORMAL_STATES
    templates: tuple[str, ...] = TEMPLATES

    @classmethod
    def for_product(
        cls, product: str, extra_normal: Sequence[str] = (), extra_abnormal: Sequence[str] = ()
    ) -> PromptSet:
        """The built-in ensembles plus a station's own phrases (duplicates kept once)."""
        if not product.strip():
            raise ValueError("the product name for the prompts must not be empty")
        return cls(
            product.strip(),
            tuple(dict.fromkeys((*NORMAL_STATES, *extra_normal))),
            tuple(dict.fromkeys((*ABNORMAL_STATES, *extra_abnormal))),
        )

    def sentences(self, states: Sequence[str]) -> list[str]:
        """Every state phrase in every template; a phrase without '{}' is used as written."""
        phrases = [s.replace("{}", self.product) for s in states]
        return [t.format(p) for p in phrases for t in self.templates]

    @property
    def normal_sentences(self) -> list[str]:
        return self.sentences(self.normal_states)

    @property
    def abnormal_sentences(self) -> list[str]:
        return self.sentences(self.abnormal_states)

    def to_json(self) -> str:
        return json.dumps(
            {
                "product": self.product,
                "normal_states": list(self.normal_states),
                "abnormal_states": list(self.abnormal_states),
                "templates": list(self.templates),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> PromptSet:
        data = json.loads(text)
        return cls(
            str(data["product"]),
            tuple(data["normal_states"]),
            tuple(data["abnormal_states"]),
            tuple(data["templates"]),
        )
