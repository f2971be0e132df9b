"""CLIP ViTs from open_clip, tapped after 4 evenly spaced blocks, text tower kept for zero-shot."""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.transformer import VisionTransformer
from torch import nn

from workers.backbones.base import Backbone
from workers.backbones.hf import hub_offline, tap_blocks
from workers.errors import BackboneSpecError, WeightsNotFoundError

LIST_MODELS = "python -c 'import open_clip; print(open_clip.list_models())'"
#: where open_clip keeps weights it fetched from plain URLs (tags without an hf_hub entry)
URL_CACHE = Path("~/.cache/clip")


def parse_rest(rest: str) -> tuple[str, str]:
    """Split ``<model>/<tag or path>`` at the first slash; paths may contain more slashes."""
    name, _, weights = rest.partition("/")
    if not name or not weights:
        raise BackboneSpecError(
            f"open_clip:{rest}: expected open_clip:<model>/<pretrained tag or weight file>, e.g. "
            "open_clip:ViT-L-14-336/openai; the weights part is required (no random weights)"
        )
    return name, weights


def check_model_name(name: str) -> dict[str, Any]:
    """The model's config; BackboneSpecError for unknown names and non-ViT image towers."""
    config = open_clip.get_model_config(name) if name in open_clip.list_models() else None
    if config is None:
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BackboneSpecError(
            f"open_clip:{name}: unknown open_clip model.{hint} See all names with: {LIST_MODELS}"
        )
    vision = config.get("vision_cfg", {})
    if "timm_model_name" in vision or not isinstance(vision.get("layers", 12), int):
        raise BackboneSpecError(
            f"open_clip:{name}: only open_clip's own ViT image towers are supported "
            "(e.g. ViT-B-16, ViT-L-14-336), not ResNet or timm towers"
        )
    return config


def cached_tag_file(tag_cfg: dict[str, Any]) -> str | None:
    """The local copy of a tag's weights in the HF cache or open_clip's URL cache, if any."""
    from huggingface_hub import try_to_load_from_cache

    if tag_cfg.get("file"):
        return str(tag_cfg["file"])
    if tag_cfg.get("hf_hub"):
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        # open_clip prefers a safetensors twin of the same file when the repo has one
        safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else None
        if safe is None and filename.endswith((".bin", ".pth")):
            safe = filename[:-4] + ".safetensors"
        for candidate in (safe, filename):
            found = candidate and try_to_load_from_cache(repo, candidate)
            if isinstance(found, str):
                return found
    if tag_cfg.get("url"):
        local = URL_CACHE.expanduser() / os.path.basename(tag_cfg["url"])
        if local.is_file():
            return str(local)
    return None


def missing_weights(name: str, tag: str, tag_cfg: dict[str, Any], reason: str) -> WeightsNotFoundError:
    hub = tag_cfg.get("hf_hub", "")
    repo, filename = os.path.split(hub) if hub else ("", "")
    fetch = f"`hf download {repo} {filename or HF_WEIGHTS_NAME}` or " if hub else ""
    return WeightsNotFoundError(
        f"open_clip:{name}/{tag}: weights are not in the local cache and could not be fetched "
        f"({reason}). To provide them, on a machine with internet run {fetch}"
        f"`python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\"` "
        "and copy the Hugging Face cache (~/.cache/huggingface, or HF_HOME) and ~/.cache/clip "
        "here; or download the weight file and name it in the spec: "
        f"open_clip:{name}//path/to/weights"
    )


def resolve_tag(name: str, tag: str) -> str:
    """Path of a pretrained tag's weights: the local cache first, then a download if allowed."""
    tag_cfg = open_clip.get_pretrained_cfg(name, tag)
    found = cached_tag_file(tag_cfg)
    if found:
        return found
    if hub_offline():
        raise missing_weights(name, tag, tag_cfg, "HF_HUB_OFFLINE is set")
    try:
        path = open_clip.download_pretrained(tag_cfg)
    except (OSError, RuntimeError) as e:
        raise missing_weights(name, tag, tag_cfg, str(e).splitlines()[0]) from e
    if not path:
        raise missing_weights(name, tag, tag_cfg, "the tag names no download location")
    return str(path)


def resolve_weights(name: str, weights: str) -> tuple[str, dict[str, Any]]:
    """A local weight file for a tag or path, and the tag settings it was trained with."""
    if open_clip.is_pretrained_cfg(name, weights):
        return resolve_tag(name, weights), open_clip.get_pretrained_cfg(name, weights)
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path), shared_tag_settings(name)
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise WeightsNotFoundError(
        f"open_clip:{name}/{weights}: {weights!r} is neither a pretrained tag of {name} "
        f"(known tags: {', '.join(tags) or 'none'}) nor an existing weight file"
    )


def shared_tag_settings(name: str) -> dict[str, Any]:
    """Settings every known tag of ``name`` agrees on, for a weight file given by path.

    A file is most likely one of the published checkpoints; when all of them were trained with
    the same mean/std and activation (ViT-L-14-336 has only ``openai``: QuickGELU), it was too.
    """
    cfgs = [open_clip.get_pretrained_cfg(name, t) for t in open_clip.list_pretrained_tags_by_model(name)]
    shared: dict[str, Any] = {}
    for key in ("mean", "std", "quick_gelu"):
        values = {repr(c.get(key, False if key == "quick_gelu" else None)) for c in cfgs}
        if cfgs and len(values) == 1 and cfgs[0].get(key) is not None:
            shared[key] = cfgs[0][key]
    return shared


def weights_fingerprint(clip: nn.Module) -> str:
    """A short digest of the image tower's output projection and class token, taken at load time.

    It tells weights apart however they were named (a tag or a file path), so a decoder trained
    on one CLIP is never applied to another of the same architecture. Taken before the Inspector
    casts to fp16, so the same weights give the same digest on every device.
    """
    visual: Any = clip.visual
    h = hashlib.sha256()
    for tensor in (visual.proj, visual.class_embedding):
        if tensor is not None:
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class OpenClipBackbone(Backbone):
    """An open_clip CLIP model whose ViT patch tokens after 4 evenly spaced blocks become maps."""

    def __init__(self, clip: nn.Module, model_name: str, spec: str) -> None:
        super().__init__()
        visual = clip.visual
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise BackboneSpecError(f"{spec}: only plain ViT image towers are supported")
        height, width = visual.image_size
        if height != width or visual.patch_size[0] != visual.patch_size[1]:
            raise BackboneSpecError(f"{spec}: only square images and patches are supported")
        self.clip = clip
        self.model_name = model_name
        self.spec = spec
        self.default_size = int(height)
        self.size_multiple = int(visual.patch_size[0])
        self.fixed_size = True  # learned position embeddings for one grid, never interpolated
        self.taps = tap_blocks(len(visual.transformer.resblocks))
        self.levels = tuple(f"block{n}" for n in self.taps)
        cfg = open_clip.get_model_preprocess_cfg(clip)
        mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._tokenizer: Any = None
        self.fingerprint = weights_fingerprint(clip)
        self.eval().requires_grad_(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(images)
        visual: Any = self.clip.visual
        x = visual.conv1(self.normalize(images).to(visual.conv1.weight.dtype))
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        # patch_dropout is skipped: it is a training-time regulariser and this model is frozen
        x = visual.ln_pre(x)
        # older open_clip versions run the blocks sequence-first (L, B, C)
        batch_first = getattr(visual.transformer, "batch_first", False)
        if not batch_first:
            x = x.transpose(0, 1)
        feats = []
        for n, block in enumerate(visual.transformer.resblocks[: self.taps[-1]], start=1):
            x = block(x)
            if n in self.taps:
                tokens = x if batch_first else x.transpose(0, 1)
                feats.append(tokens[:, 1:].transpose(1, 2).reshape(b, c, h, w))  # drop CLS
        return feats

    def project_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) patch tokens into the joint image-text space (B, N, D): ln_post, then proj."""
        visual: Any = self.clip.visual
        if visual.proj is None:
            raise RuntimeError(f"{self.spec}: this model has no image projection")
        return visual.ln_post(tokens) @ visual.proj

    @property
    def tokenizer(self) -> Any:
        """open_clip's tokenizer for this model, built on first use (few-shot never needs it)."""
        if self._tokenizer is None:
            try:
                self._tokenizer = open_clip.get_tokenizer(self.model_name)
            except OSError as e:  # HF tokenizers (e.g. SigLIP) need files from the hub
                raise WeightsNotFoundError(
                    f"{self.spec}: tokenizer files not found ({e}); fetch them on a machine with "
                    "internet and copy the Hugging Face cache (~/.cache/huggingface) here"
                ) from e
        return self._tokenizer

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.mean.device)

    def encode_text(self, tokenized: torch.Tensor) -> torch.Tensor:
        """Text embeddings (B, D) in the space ``project_tokens`` maps into (not normalised)."""
        clip: Any = self.clip
        return clip.encode_text(tokenized.to(self.mean.device))


def load_open_clip(rest: str) -> Backbone:
    """Build ``open_clip:<model>/<tag or file>`` with real weights; never with random ones."""
    name, weights = parse_rest(rest)
    check_model_name(name)
    path, settings = resolve_weights(name, weights)
    preprocess = {k: settings[k] for k in ("mean", "std") if k in settings}
    try:
        clip = open_clip.create_model(
            name,
            pretrained=path,
            # the published weights need the activation they were trained with (QuickGELU for
            # OpenAI's); open_clip 3 no longer switches it for a tag, it only warns
            force_quick_gelu=bool(settings.get("quick_gelu", False)),
            force_preprocess_cfg=preprocess or None,
            require_pretrained=True,
        )
    except RuntimeError as e:  # load_state_dict(strict=True): a file for another architecture
        raise BackboneSpecError(f"open_clip:{name}/{weights}: weights do not fit {name}: {e}") from e
    return OpenClipBackbone(clip, name, spec=f"open_clip:{name}/{weights}")
