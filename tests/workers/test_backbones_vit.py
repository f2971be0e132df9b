"""ViT backbones (open_clip, transformers) from tiny random-weight models via the real loaders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import open_clip
import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    BitImageProcessor,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)

from workers.backbones import load_backbone
from workers.backbones.hf import IMAGENET_MEAN, from_cache_first, tap_blocks
from workers.errors import BackboneSpecError, WeightsNotFoundError

TINY = "linewatch-tiny-vit"
TINY_DEEPER = "linewatch-tiny-vit-deeper"
TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def tiny_config(layers: int) -> dict[str, Any]:
    vision = {"image_size": 32, "layers": layers, "width": 32, "head_width": 16, "patch_size": 8}
    return {"embed_dim": 16, "vision_cfg": vision, "text_cfg": TEXT_CFG}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """Register tiny open_clip configs and save random weights for the 4-block one to a file."""
    root = tmp_path_factory.mktemp("open_clip")
    (root / f"{TINY}.json").write_text(json.dumps(tiny_config(4)))
    (root / f"{TINY_DEEPER}.json").write_text(json.dumps(tiny_config(5)))
    open_clip.add_model_config(root)
    torch.manual_seed(0)
    state = open_clip.create_model(TINY).state_dict()
    path = root / "tiny.pt"
    torch.save(state, path)
    return path, state


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub, an empty HF cache and an empty ~/.cache/clip, and any download attempt fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_download(*args: object, **kwargs: object) -> str:
        raise AssertionError("tried to download although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(open_clip, "download_pretrained", no_download)


@pytest.mark.parametrize(
    ("depth", "taps"),
    [(32, (8, 16, 24, 32)), (24, (6, 12, 18, 24)), (12, (3, 6, 9, 12)), (4, (1, 2, 3, 4))],
)
def test_taps_are_evenly_spaced_ending_at_the_last_block(depth: int, taps: tuple[int, ...]) -> None:
    assert tap_blocks(depth) == taps


def test_open_clip_loads_the_weights_in_the_file(tiny_clip: tuple[Path, dict]) -> None:
    path, state = tiny_clip
    backbone: Any = load_backbone(f"open_clip:{TINY}/{path}")
    loaded = backbone.clip.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert backbone.levels == ("block1", "block2", "block3", "block4")
    assert (backbone.default_size, backbone.size_multiple, backbone.fixed_size) == (32, 8, True)
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not backbone.training


def test_open_clip_maps_match_open_clip_intermediates(tiny_clip: tuple[Path, dict]) -> None:
    backbone: Any = load_backbone(f"open_clip:{TINY}/{tiny_clip[0]}")
    images = torch.rand(2, 3, 32, 32)
    feats = backbone(images)
    reference = backbone.clip.visual.forward_intermediates(
        backbone.normalize(images), indices=[0, 1, 2, 3], intermediates_only=True
    )["image_intermediates"]
    assert [f.shape for f in feats] == [torch.Size([2, 32, 4, 4])] * 4
    for ours, theirs in zip(feats, reference, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_open_clip_sequence_first_blocks_give_the_same_maps(tiny_clip: tuple[Path, dict]) -> None:
    backbone: Any = load_backbone(f"open_clip:{TINY}/{tiny_clip[0]}")
    images = torch.rand(1, 3, 32, 32)
    expected = backbone(images)
    # older open_clip runs its blocks on (L, B, C) tensors; emulate that layout
    backbone.clip.visual.transformer.batch_first = False
    for block in backbone.clip.visual.transformer.resblocks:
        block.attn.batch_first = False
    for ours, theirs in zip(backbone(images), expected, strict=True):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("shape", [(1, 3, 40, 32), (1, 3, 24, 24), (1, 1, 32, 32), (3, 32, 32)])
def test_open_clip_rejects_input_of_other_sizes(tiny_clip: tuple[Path, dict], shape: tuple) -> None:
    backbone: Any = load_backbone(f"open_clip:{TINY}/{tiny_clip[0]}")
    with pytest.raises(ValueError, match="open_clip:"):
        backbone(torch.rand(*shape))


def test_open_clip_projection_and_text_match_clip(tiny_clip: tuple[Path, dict]) -> None:
    backbone: Any = load_backbone(f"open_clip:{TINY}/{tiny_clip[0]}")
    images = torch.rand(2, 3, 32, 32)
    patches = backbone(images)[-1].flatten(2).transpose(1, 2)
    assert backbone.project_tokens(patches).shape == (2, 16, 16)
    # the CLS token projected our way must equal open_clip's own image embedding
    cls = backbone.clip.visual.forward_intermediates(
        backbone.normalize(images), indices=[3], intermediates_only=True, output_extra_tokens=True
    )["image_intermediates_prefix"][0]
    image_embedding = backbone.clip.encode_image(backbone.normalize(images))
    torch.testing.assert_close(backbone.project_tokens(cls)[:, 0], image_embedding)
    tokens = backbone.tokenize(["a photo of a bottle.", "a photo of a damaged bottle."])
    text = backbone.encode_text(tokens)
    assert text.shape == (2, 16)
    torch.testing.assert_close(text, backbone.clip.encode_text(tokens))


@pytest.mark.parametrize(
    "spec",
    [
        f"open_clip:{TINY}/openai",
        "open_clip:ViT-B-16/laion2b_s34b_b88k",
        "open_clip:ViT-L-14-336/openai",
    ],
)
@pytest.mark.usefixtures("offline")
def test_open_clip_missing_weights_fail_with_instructions(tiny_clip: tuple, spec: str) -> None:
    name = spec.removeprefix("open_clip:").split("/")[0]
    with pytest.raises(WeightsNotFoundError, match=name) as caught:
        load_backbone(spec)
    assert f"open_clip:{name}//path/to/" in str(caught.value) or "known tags" in str(caught.value)


def test_open_clip_unreachable_hub_fails_with_instructions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))

    def unreachable(*args: object, **kwargs: object) -> str:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(open_clip, "download_pretrained", unreachable)
    with pytest.raises(WeightsNotFoundError, match="hf download timm/vit_large_patch14_clip_336"):
        load_backbone("open_clip:ViT-L-14-336/openai")


def test_open_clip_tag_resolves_from_the_hf_cache(
    tiny_clip: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A tag whose file sits in the HF cache loads offline, with the tag's mean/std."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    tag = {"hf_hub": "linewatch/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {"tiny": tag})
    repo = tmp_path / "models--linewatch--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(tiny_clip[0].read_bytes())

    backbone: Any = load_backbone(f"open_clip:{TINY}/tiny")
    assert torch.equal(backbone.clip.visual.proj, tiny_clip[1]["visual.proj"])
    assert backbone.mean.flatten().tolist() == [0.5, 0.5, 0.5]


def test_open_clip_file_gets_the_settings_all_tags_share(
    tiny_clip: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weight file of a model whose only tag used QuickGELU and mean 0.5 is run that way."""
    tag = {
        "hf_hub": "linewatch/tiny-clip/",
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
        "quick_gelu": True,
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {"tiny": tag})
    backbone: Any = load_backbone(f"open_clip:{TINY}/{tiny_clip[0]}")
    assert backbone.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    activation = backbone.clip.visual.transformer.resblocks[0].mlp.gelu
    assert type(activation).__name__ == "QuickGELU"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("open_clip:ViT-Nope-99/openai", "list_models"),
        ("open_clip:RN50/openai", "ViT image towers"),
        ("open_clip:ViT-B-16", "weights part is required"),
    ],
)
def test_open_clip_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(BackboneSpecError, match=message):
        load_backbone(spec)


def test_open_clip_missing_file_and_foreign_file(tiny_clip: tuple[Path, dict]) -> None:
    with pytest.raises(WeightsNotFoundError, match="nor an existing weight file"):
        load_backbone(f"open_clip:{TINY}//nonexistent/dir/weights.pt")
    with pytest.raises(BackboneSpecError, match="do not fit"):
        load_backbone(f"open_clip:{TINY_DEEPER}/{tiny_clip[0]}")


def tiny_dinov2_config(**extra: int) -> dict[str, Any]:
    return dict(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
        **extra,
    )


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dinov2")
    Dinov2Model(Dinov2Config(**tiny_dinov2_config())).save_pretrained(path)
    return path


def reference_maps(model: Any, images: torch.Tensor, prefix: int) -> list[torch.Tensor]:
    hidden = model(pixel_values=images, output_hidden_states=True).hidden_states
    b, _, height, width = images.shape
    grid = (b, 32, height // 14, width // 14)
    return [hidden[n][:, prefix:].transpose(1, 2).reshape(grid) for n in (1, 2, 3, 4)]


def test_hf_dinov2_gives_four_maps_for_non_square_input(dinov2_dir: Path) -> None:
    backbone: Any = load_backbone(f"hf:{dinov2_dir}")
    assert backbone.levels == ("block1", "block2", "block3", "block4")
    assert (backbone.default_size, backbone.size_multiple, backbone.fixed_size) == (56, 14, False)
    original = Dinov2Model.from_pretrained(dinov2_dir)
    loaded = backbone.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in original.state_dict().items())
    images = torch.rand(2, 3, 42, 70)
    feats = backbone(images)
    assert [f.shape for f in feats] == [torch.Size([2, 32, 3, 5])] * 4
    # no preprocessor_config.json in the directory: ImageNet statistics
    assert backbone.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    expected = reference_maps(original, backbone.normalize(images), prefix=1)
    for ours, theirs in zip(feats, expected, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_hf_dinov2_register_tokens_are_dropped(tmp_path: Path) -> None:
    config = Dinov2WithRegistersConfig(**tiny_dinov2_config(num_register_tokens=4))
    model = Dinov2WithRegistersModel(config).eval()
    model.save_pretrained(tmp_path)
    backbone: Any = load_backbone(f"hf:{tmp_path}")
    images = torch.rand(1, 3, 28, 56)
    expected = reference_maps(model, backbone.normalize(images), prefix=5)
    for ours, theirs in zip(backbone(images), expected, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_hf_normalisation_comes_from_the_processor_config(dinov2_dir: Path, tmp_path: Path) -> None:
    for item in dinov2_dir.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    processor = BitImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.2, 0.2])
    processor.save_pretrained(tmp_path)
    backbone: Any = load_backbone(f"hf:{tmp_path}")
    assert backbone.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert backbone.std.flatten().tolist() == pytest.approx([0.2, 0.2, 0.2])


def test_hf_rejects_sizes_off_the_patch_grid(dinov2_dir: Path) -> None:
    backbone: Any = load_backbone(f"hf:{dinov2_dir}")
    with pytest.raises(ValueError, match="multiple of 14"):
        backbone(torch.rand(1, 3, 42, 60))


def test_hf_tries_the_cache_before_the_hub_and_never_the_hub_offline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bool] = []

    def loader(source: str, local_files_only: bool) -> str:
        calls.append(local_files_only)
        if local_files_only:
            raise OSError("not in the cache")
        return "fetched"

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert from_cache_first(loader, "org/repo", is_dir=False) == "fetched"
    assert calls == [True, False]
    calls.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="not in the cache"):
        from_cache_first(loader, "org/repo", is_dir=False)
    assert calls == [True]


@pytest.mark.usefixtures("offline")
def test_hf_missing_repo_fails_with_instructions() -> None:
    with pytest.raises(WeightsNotFoundError, match="hf download nonexistent-org/nonexistent-model"):
        load_backbone("hf:nonexistent-org/nonexistent-model")
    with pytest.raises(WeightsNotFoundError, match="no such directory"):
        load_backbone("hf:/nonexistent/models/dinov2")


def test_hf_non_vit_model_is_refused(tmp_path: Path) -> None:
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(BackboneSpecError, match="not a ViT image encoder"):
        load_backbone(f"hf:{tmp_path}")
