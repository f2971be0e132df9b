"""Station YAML schema: one small model per concern, composed into StationConfig."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from config.base import StrictModel
from config.explainer import ExplainerSettings

DEFAULT_DESCRIPTION = (
    "This is a photo of a {name} for anomaly detection, which should be without any damage, "
    "flaw, defect, scratch, hole or broken part."
)


CAMERA_URL_SCHEMES = ("rtsp", "rtsps", "http", "https")

# "scheme:" with 2+ letters (so "C:\\clips" stays a path), or a known scheme that lost its colon
# ("rtsp//cam"): both are meant as URLs, and reporting them as missing files would mislead.
_URL_LIKE = re.compile(r"^([a-z][a-z0-9+.-]+:|(rtsps?|https?)//)", re.IGNORECASE)


def looks_like_url(source: str) -> bool:
    """Whether a camera source string is meant as a URL rather than a file path or glob."""
    return bool(_URL_LIKE.match(source))


def check_camera_url(source: str) -> str:
    """Return ``source`` if it is a usable camera URL, else raise ValueError saying why."""
    expected = "expected rtsp://, rtsps://, http:// or https:// followed by a host"
    try:
        parts = urlsplit(source)
        host = parts.hostname
    except ValueError as e:  # e.g. a malformed IPv6 host or port
        raise ValueError(f"not a valid camera URL ({e}); {expected}") from e
    if parts.scheme.lower() not in CAMERA_URL_SCHEMES or not host:
        raise ValueError(f"not a valid camera URL; {expected}")
    return source


def normalize_source(value: object) -> int | str:
    """A camera source as the schema keeps it: a device index, a checked URL or a path string.

    Raises ValueError for anything else, saying what is expected.
    """
    # bool is an int in Python: "source: yes" must not silently open device 1
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a device index (0, 1, …), a camera URL or a file path")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        if value.isascii() and value.isdigit():  # a quoted index, e.g. from a template
            value = int(value)
        elif looks_like_url(value):
            return check_camera_url(value)
    if isinstance(value, int) and value < 0:
        raise ValueError("a device index must be 0 or more")
    return value


class CameraSource(StrictModel):
    """Where frames come from: a USB device index, an RTSP/HTTP URL, a video file or a glob."""

    source: int | str = Field(
        description="USB device index (0, 1, …), rtsp:// or http(s):// URL, video file, "
        "image folder or glob (relative paths are relative to the YAML file)"
    )
    loop: bool = Field(default=False, description="Restart recorded sources (files) at the end")
    # strict: YAML 1.1 reads "yes"/"on" as true, which lax pydantic would turn into 1 fps
    fps: float = Field(default=5.0, gt=0, le=120, strict=True, description="Frames per second to inspect")

    @field_validator("source", mode="before")
    @classmethod
    def _check_source(cls, value: object) -> int | str:
        return normalize_source(value)


class ProductClass(StrictModel):
    """The product this station inspects, in AnomalyGPT's words."""

    name: str = Field(min_length=1, max_length=80, description="Product class, e.g. 'bottle'")
    description: str | None = Field(
        default=None,
        max_length=1000,
        description="Image description given to the explainer; defaults to AnomalyGPT's template",
    )

    normal_states: tuple[str, ...] = Field(
        default=(),
        max_length=32,
        description="Extra phrases for a good part, added to the built-in ones for zero-shot "
        "('{}' stands for the name), e.g. 'evenly textured {}'",
    )
    abnormal_states: tuple[str, ...] = Field(
        default=(),
        max_length=32,
        description="Extra phrases for a defective part, added to the built-in ones for zero-shot "
        "('{}' stands for the name), e.g. '{} with a crack'",
    )

    def image_description(self) -> str:
        return self.description or DEFAULT_DESCRIPTION.format(name=self.name)

    @field_validator("normal_states", "abnormal_states")
    @classmethod
    def _check_phrases(cls, phrases: tuple[str, ...]) -> tuple[str, ...]:
        for phrase in phrases:
            check_state_phrase(phrase)
        return tuple(p.strip() for p in phrases)


def check_state_phrase(phrase: str) -> str:
    """A state phrase is short text with at most one '{}' (the product name) and no other braces."""
    if not phrase.strip() or len(phrase) > 120:
        raise ValueError(f"state phrase {phrase!r} must be 1 to 120 characters")
    if phrase.count("{}") > 1 or "{" in phrase.replace("{}", "") or "}" in phrase.replace("{}", ""):
        raise ValueError(
            f"state phrase {phrase!r} may hold '{{}}' once (it stands for the product name) "
            "and no other braces"
        )
    return phrase


class ModelSettings(StrictModel):
    """Which backbone localizes anomalies, at which size, in which mode."""

    backbone: str = Field(
        default="packaged:efficientnet-lite0",
        pattern=r"^(packaged|open_clip|hf):.+",
        description="Backbone spec: packaged:NAME, open_clip:MODEL/PRETRAINED or hf:REPO_OR_DIR",
    )
    image_size: int = Field(
        default=320,
        ge=32,
        le=2048,
        strict=True,
        description="Inspection resolution: the frame's longer side, in pixels",
    )
    mode: Literal["few-shot", "zero-shot", "both"] = Field(
        default="few-shot", description="few-shot memory bank, zero-shot text decoder, or both"
    )

    decoder: Path | None = Field(
        default=None,
        description="Decoder checkpoint from `linewatch train-decoder` for zero-shot/both (relative "
        "to the YAML file); left out, the CLIP model's own projection is used",
    )

    @field_validator("decoder", mode="before")
    @classmethod
    def _decoder_not_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():  # Path("") would mean the YAML's folder
            raise ValueError("must not be empty; leave the key out to use the default projection")
        return value

    @model_validator(mode="after")
    def _zero_shot_needs_text(self) -> ModelSettings:
        # only CLIP backbones have a text encoder; the others would fail at worker start-up
        if self.mode != "few-shot" and not self.backbone.startswith("open_clip:"):
            raise ValueError(
                f"mode {self.mode!r} needs an open_clip: backbone (packaged: and hf: backbones "
                "have no text encoder); use mode: few-shot"
            )
        if self.mode == "few-shot" and self.decoder is not None:
            raise ValueError("decoder is only used in mode zero-shot or both; remove it or change the mode")
        return self


class ReferenceSettings(StrictModel):
    """Normal reference images that build the few-shot memory bank and calibrate the threshold."""

    folder: Path = Field(description="Folder of normal images (relative to the YAML file)")
    k: int = Field(default=4, ge=1, le=1024, strict=True, description="How many reference images to use")
    augment: bool = Field(
        default=True,
        description="Add mirrored and exposure-bracketed (darker, brighter) copies of the references",
    )

    @field_validator("folder", mode="before")
    @classmethod
    def _folder_not_empty(cls, value: object) -> object:
        # Path("") is ".", which would quietly mean "the YAML file's own folder"
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value


class RegionSettings(StrictModel):
    """How flagged pixels become reported regions."""

    min_area: float = Field(
        default=0.0005,
        ge=0,
        lt=1,
        strict=True,
        description="Smallest region to report, as a fraction of the frame area",
    )


class StationConfig(StrictModel):
    """One inspection station: a camera watching one product class."""

    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Station id: lowercase letters, digits, '-' or '_'; it names the Redis streams",
    )
    name: str = Field(default="", max_length=120, description="Human-readable station name")
    camera: CameraSource
    product: ProductClass
    model: ModelSettings = ModelSettings()
    references: ReferenceSettings | None = Field(
        default=None,
        description="Normal reference images; required for modes few-shot and both, optional for zero-shot",
    )
    regions: RegionSettings = RegionSettings()
    explainer: ExplainerSettings = ExplainerSettings()

    @model_validator(mode="after")
    def _bank_needs_references(self) -> StationConfig:
        # zero-shot alone can start from text; the memory bank of few-shot/both cannot
        if self.references is None and self.model.mode != "zero-shot":
            # reported like any missing key (file, line of the parent, the field's description)
            error = PydanticCustomError(
                "missing", "references are required for mode {mode}", {"mode": self.model.mode}
            )
            raise ValidationError.from_exception_data(
                "StationConfig", [InitErrorDetails(type=error, loc=("references",), input={})]
            )
        return self
