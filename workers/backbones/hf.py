"""ViT image encoders from transformers (DINOv2 and kin), tapped after 4 evenly spaced layers."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from workers.backbones.base import Backbone
from workers.errors import BackboneSpecError, WeightsNotFoundError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ImageNet statistics: what DINOv2 and most hub ViTs were trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: model types whose forward interpolates position embeddings to any input size
INTERPOLATING_TYPES = frozenset({"dinov2", "dinov2_with_registers", "dinov3_vit"})
TAPS = 4


def tap_blocks(depth: int, count: int = TAPS) -> tuple[int, ...]:
    """1-based numbers of ``count`` evenly spaced blocks ending at the last: 24 -> 6, 12, 18, 24."""
    if depth < count:
        raise BackboneSpecError(f"a model with {depth} blocks cannot give {count} evenly spaced taps")
    return tuple(depth * k // count for k in range(1, count + 1))


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted.

    huggingface_hub reads HF_HUB_OFFLINE once at import, so the environment is read again here:
    a worker (or a test) that sets it later still gets offline behaviour.
    """
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(
        (f or "").strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags
    )


def how_to_provide(repo: str) -> str:
    return (
        f"to provide it, run `hf download {repo}` (older huggingface_hub: "
        f"`huggingface-cli download {repo}`) on a machine with internet and copy its Hugging Face "
        "cache (~/.cache/huggingface, or HF_HOME) here, or save the model to a directory and use "
        "the spec hf:/path/to/dir"
    )


def from_cache_first(load: Callable[..., T], source: str, is_dir: bool) -> T:
    """Call ``load(source, local_files_only=...)`` from local files first, then from the hub.

    Trying the cache first means a machine without network starts without waiting on hub timeouts.
    Raises OSError when both fail (or when the hub may not be contacted).
    """
    try:
        return load(source, local_files_only=True)
    except OSError:
        if is_dir or hub_offline():
            raise
    return load(source, local_files_only=False)


def load_model(source: str, is_dir: bool) -> nn.Module:
    from transformers import AutoModel

    try:
        return from_cache_first(AutoModel.from_pretrained, source, is_dir)
    except OSError as e:
        where = "the directory" if is_dir else "the local Hugging Face cache or the hub"
        raise WeightsNotFoundError(
            f"hf:{source}: model weights not found in {where} ({e}); {how_to_provide(source)}"
        ) from e
    except ValueError as e:  # transformers' answer to a config it has no model class for
        raise BackboneSpecError(f"hf:{source}: not a model transformers can build: {e}") from e


def load_normalisation(source: str, is_dir: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std from the repo's image processor config, else ImageNet's."""
    from transformers import AutoImageProcessor

    try:
        processor: Any = from_cache_first(AutoImageProcessor.from_pretrained, source, is_dir)
        return tuple(processor.image_mean), tuple(processor.image_std)
    except (OSError, AttributeError, TypeError) as e:
        # No preprocessor_config.json (common for models saved with save_pretrained alone): the
        # ImageNet statistics are what DINOv2 and nearly every hub ViT were trained with.
        logger.warning("hf:%s: no usable image processor config (%s); using ImageNet mean/std", source, e)
        return IMAGENET_MEAN, IMAGENET_STD


def patch_size_of(config: Any, source: str) -> int:
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, list | tuple):
        patch = patch[0] if len(set(patch)) == 1 else None
    if not isinstance(patch, int) or not hasattr(config, "num_hidden_layers"):
        raise BackboneSpecError(
            f"hf:{source}: {type(config).__name__} is not a ViT image encoder with square patches "
            "(expected patch_size and num_hidden_layers in its config, e.g. facebook/dinov2-small)"
        )
    return patch


class HfVitBackbone(Backbone):
    """A transformers ViT whose hidden states after 4 evenly spaced layers become patch maps."""

    def __init__(
        self,
        model: nn.Module,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        spec: str,
    ) -> None:
        super().__init__()
        config: Any = model.config
        self.model = model
        self.spec = spec
        self.size_multiple = patch_size_of(config, spec)
        image_size = getattr(config, "image_size", 224)
        self.default_size = int(image_size[0] if isinstance(image_size, list | tuple) else image_size)
        # models outside this set use their fixed position embeddings as trained
        self.fixed_size = config.model_type not in INTERPOLATING_TYPES
        self.taps = tap_blocks(int(config.num_hidden_layers))
        self.levels = tuple(f"block{n}" for n in self.taps)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(images)
        b, _, height, width = images.shape
        h, w = height // self.size_multiple, width // self.size_multiple
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=self.normalize(images).to(dtype), output_hidden_states=True)
        feats = []
        for n in self.taps:
            tokens = out.hidden_states[n]  # [0] is the embedding output, [n] is after layer n
            # Prefix tokens (CLS, registers, distillation) come first; counting them from the grid
            # covers every model type without a per-model table.
            prefix = tokens.shape[1] - h * w
            if prefix < 0:
                raise RuntimeError(f"{self.spec}: {tokens.shape[1]} tokens for a {h}x{w} patch grid")
            patches = tokens[:, prefix:]
            feats.append(patches.transpose(1, 2).reshape(b, patches.shape[-1], h, w))
        return feats


def load_hf(rest: str) -> Backbone:
    """Build ``hf:<repo id or local dir>`` with real weights; WeightsNotFoundError if absent."""
    source = rest.strip()
    path = Path(source).expanduser()
    is_dir = path.is_dir()
    if is_dir:
        source = str(path)
    elif source.startswith(("/", ".", "~")) or source.count("/") > 1:
        raise WeightsNotFoundError(
            f"hf:{rest}: no such directory; give a local model directory or a hub repo id "
            "such as facebook/dinov2-small"
        )
    model = load_model(source, is_dir)
    mean, std = load_normalisation(source, is_dir)
    return HfVitBackbone(model, mean, std, spec=f"hf:{source}")
