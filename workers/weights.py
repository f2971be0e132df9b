"""Where a backbone's weights are on this machine, found without loading the model or going online.

Used by ``linewatch worker --check`` (container healthchecks run it every 30 s): loading a
ViT-L to answer "are the weights there?" would cost seconds and a GB of memory each time.
"""

from __future__ import annotations

from pathlib import Path

from workers.backbones import parse_spec
from workers.errors import WeightsNotFoundError

#: a Hugging Face model folder or cache entry holds its weights under one of these names
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def weights_location(spec: str) -> str:
    """The local file or folder holding ``spec``'s weights; WeightsNotFoundError naming how to
    provide them when they are absent (never a download)."""
    kind, rest = parse_spec(spec)
    if kind == "packaged":
        from workers.backbones.efficientnet import packaged_weights_path

        return str(packaged_weights_path())
    if kind == "open_clip":
        return _open_clip_weights(rest)
    return _hf_weights(rest)


def _open_clip_weights(rest: str) -> str:
    import open_clip

    from workers.backbones.openclip import cached_tag_file, check_model_name, missing_weights, parse_rest

    name, weights = parse_rest(rest)
    check_model_name(name)
    if open_clip.is_pretrained_cfg(name, weights):
        tag_cfg = open_clip.get_pretrained_cfg(name, weights)
        found = cached_tag_file(tag_cfg)
        if found and Path(found).is_file():
            return found
        raise missing_weights(name, weights, tag_cfg, "not in the local cache")
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path)
    raise WeightsNotFoundError(f"open_clip:{rest}: no weight file {path}")


def _hf_weights(rest: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    from workers.backbones.hf import how_to_provide

    source = rest.strip()
    folder = Path(source).expanduser()
    if folder.is_dir():
        for name in HF_WEIGHT_FILES:
            if (folder / name).is_file():
                return str(folder / name)
        raise WeightsNotFoundError(f"hf:{rest}: {folder} holds none of {', '.join(HF_WEIGHT_FILES)}")
    for name in HF_WEIGHT_FILES:
        found = try_to_load_from_cache(source, name)
        if isinstance(found, str):
            return found
    raise WeightsNotFoundError(
        f"hf:{source}: weights not in the local Hugging Face cache; {how_to_provide(source)}"
    )
