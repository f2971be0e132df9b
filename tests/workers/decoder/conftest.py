"""Tiny random-weight open_clip models registered and saved to files, loaded through the real loader."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from tests.workers.test_backbones_vit import TEXT_CFG

TINY = "linewatch-decoder-vit"
#: same architecture as TINY: a decoder trained on one must be refused for the other
TINY_TWIN = "linewatch-decoder-vit-twin"
TINY_OTHER = "linewatch-decoder-vit-wide"


def decoder_config(width: int = 32) -> dict:
    # 64 px, 8 px patches: an 8x8 grid, enough to localise; still milliseconds per batch on a CPU
    vision = {"image_size": 64, "layers": 4, "width": width, "head_width": 16, "patch_size": 8}
    return {"embed_dim": 16, "vision_cfg": vision, "text_cfg": TEXT_CFG}


@pytest.fixture(scope="session")
def tiny_specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Backbone specs: 'main', 'twin' (same model, other weights), 'other' (another model)."""
    root = tmp_path_factory.mktemp("decoder_clip")
    for name, width in ((TINY, 32), (TINY_TWIN, 32), (TINY_OTHER, 48)):
        (root / f"{name}.json").write_text(json.dumps(decoder_config(width)))
    open_clip.add_model_config(root)
    specs = {}
    for key, name, seed in (("main", TINY, 0), ("twin", TINY, 1), ("other", TINY_OTHER, 2)):
        torch.manual_seed(seed)
        path = root / f"{key}.pt"
        torch.save(open_clip.create_model(name).state_dict(), path)
        specs[key] = f"open_clip:{name}/{path}"
    return specs
