"""Decoder checkpoints round-trip, and a checkpoint for other weights or another model is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from workers.backbones import load_backbone
from workers.decoder.builder import build_decoder
from workers.decoder.checkpoint import TrainingState, read_checkpoint, save_checkpoint
from workers.decoder.prompts import PromptSet
from workers.decoder.zero_shot import default_projections
from workers.errors import DecoderError


@pytest.fixture
def saved(tiny_specs: dict[str, str], tmp_path: Path) -> tuple[Path, Any, list]:
    backbone = load_backbone(tiny_specs["main"])
    projections = default_projections(backbone)
    optimizer = torch.optim.Adam([p for m in projections for p in m.parameters()], lr=1e-3)
    for m in projections:  # make them differ from CLIP's and give the optimizer some state
        (m(torch.randn(3, 32)) ** 2).sum().backward()
    optimizer.step()
    path = tmp_path / "d.safetensors"
    state = TrainingState(3, [0.5, 0.4, 0.3], {"lr": 1e-3}, optimizer.state_dict())
    save_checkpoint(path, projections, backbone, PromptSet.for_product("tile", ["even {}"]), state)
    return path, backbone, projections


def test_checkpoint_round_trips(saved: tuple[Path, Any, list]) -> None:
    path, backbone, projections = saved
    loaded = read_checkpoint(path, backbone)
    for a, b in zip(projections, loaded.projections, strict=True):
        torch.testing.assert_close(a.proj, b.proj)
        torch.testing.assert_close(a.norm.weight, b.norm.weight)
        torch.testing.assert_close(a.norm.bias, b.norm.bias)
    assert loaded.backbone_spec == backbone.spec
    assert loaded.prompts == PromptSet.for_product("tile", ["even {}"])
    assert (loaded.training.epochs_done, loaded.training.losses) == (3, [0.5, 0.4, 0.3])
    opt = torch.optim.Adam([p for m in loaded.projections for p in m.parameters()], lr=1e-3)
    opt.load_state_dict(loaded.training.optimizer)  # a resumed run gets its moments back
    assert torch.count_nonzero(opt.state_dict()["state"][0]["exp_avg"]) > 0


def test_station_decoder_uses_the_trained_projections(saved: tuple[Path, Any, list]) -> None:
    path, backbone, projections = saved
    decoder = build_decoder(backbone, PromptSet.for_product("tile"), path)
    torch.testing.assert_close(decoder.projections[0].proj, projections[0].proj)
    assert not torch.allclose(decoder.projections[0].proj, default_projections(backbone)[0].proj)


@pytest.mark.parametrize(
    ("other", "why"), [("twin", "other weights of the same model"), ("other", "another model")]
)
def test_checkpoint_for_another_backbone_is_refused(
    saved: tuple[Path, Any, list], tiny_specs: dict[str, str], other: str, why: str
) -> None:
    path, backbone, _ = saved
    with pytest.raises(DecoderError, match=why) as caught:
        build_decoder(load_backbone(tiny_specs[other]), PromptSet.for_product("tile"), path)
    message = str(caught.value)
    assert f"trained for {backbone.spec}" in message and "linewatch train-decoder --backbone" in message


def test_same_weights_named_by_another_path_are_accepted(
    saved: tuple[Path, Any, list], tiny_specs: dict[str, str], tmp_path: Path
) -> None:
    path = saved[0]
    name, weights = tiny_specs["main"].removeprefix("open_clip:").split("/", 1)
    copy = tmp_path / "copy.pt"
    copy.write_bytes(Path(weights).read_bytes())
    build_decoder(load_backbone(f"open_clip:{name}/{copy}"), PromptSet.for_product("tile"), path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), (b"not safetensors", "cannot be read"), ("bank", "not a linewatch")],
)
def test_bad_checkpoint_files_say_what_is_wrong(
    tiny_specs: dict[str, str], tmp_path: Path, content: object, message: str
) -> None:
    path = tmp_path / "d.safetensors"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "bank":
        from safetensors.torch import save_file

        save_file({"level0": torch.zeros(2, 2)}, str(path), metadata={"station_id": "x"})
    with pytest.raises(DecoderError, match=message):
        read_checkpoint(path, load_backbone(tiny_specs["main"]))
