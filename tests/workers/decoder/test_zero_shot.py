"""The zero-shot map: formula, CLIP's own projection, text ensembles, and mode both through the Inspector."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.workers.conftest import make_part
from workers.backbones import load_backbone
from workers.decoder.builder import build_decoder
from workers.decoder.prompts import ABNORMAL_STATES, NORMAL_STATES, PromptSet
from workers.decoder.text_features import text_features
from workers.decoder.zero_shot import PatchProjection, anomaly_probability
from workers.inspector import Inspector
from workers.localization import fuse_levels
from workers.references import build_station_model

TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # normal = x axis, abnormal = y axis


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ([3.0, 4.0], 1 / (1 + math.exp(-100 * (0.8 - 0.6)))),  # normalised to (0.6, 0.8)
        ([1.0, 1.0], 0.5),  # equally close to both states
        ([1.0, 0.0], 1 / (1 + math.exp(100))),  # exactly normal
        ([0.0, -2.0], 1 / (1 + math.exp(100))),  # away from abnormal: logits (0, -100)
        ([0.1, 0.1005], 1 / (1 + math.exp(-100 * (0.1005 - 0.1) / math.hypot(0.1, 0.1005)))),
    ],
)
def test_probability_matches_the_formula_by_hand(patch: list[float], expected: float) -> None:
    got = anomaly_probability(torch.tensor([patch]), TEXT)
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(expected, rel=1e-4, abs=1e-12)


def test_temperature_sharpens_the_decision() -> None:
    patch = torch.tensor([[0.6, 0.8]])
    soft = float(anomaly_probability(patch, TEXT, tau=1.0)[0])
    assert soft == pytest.approx(1 / (1 + math.exp(-0.2)), rel=1e-5)
    assert float(anomaly_probability(patch, TEXT)[0]) > 0.99 > soft


@pytest.fixture(scope="module")
def backbone(tiny_specs: dict[str, str]) -> Any:
    return load_backbone(tiny_specs["main"])


def test_default_projection_is_clips_own(backbone: Any) -> None:
    tokens = torch.randn(2, 5, 32)
    ours = PatchProjection.from_clip(backbone)(tokens)
    torch.testing.assert_close(ours, backbone.project_tokens(tokens))


def test_text_features_average_the_normalised_ensemble(backbone: Any) -> None:
    prompts = PromptSet("bottle", ("{}", "flawless {}"), ("broken {}",), ("a photo of a {}.", "a {} photo."))
    assert prompts.normal_sentences == [
        "a photo of a bottle.",
        "a bottle photo.",
        "a photo of a flawless bottle.",
        "a flawless bottle photo.",
    ]
    text = text_features(backbone, prompts)
    with torch.no_grad():
        emb = F.normalize(backbone.encode_text(backbone.tokenize(prompts.normal_sentences)), dim=-1)
    torch.testing.assert_close(text[0], F.normalize(emb.mean(0), dim=0))
    assert text.shape == (2, 16)
    torch.testing.assert_close(text.norm(dim=1), torch.ones(2))


def test_station_phrases_are_added_to_the_built_in_ensembles() -> None:
    prompts = PromptSet.for_product("tile", ["evenly textured {}"], ["cracked tile", "broken {}"])
    assert prompts.normal_states == (*NORMAL_STATES, "evenly textured {}")
    assert prompts.abnormal_states == (*ABNORMAL_STATES, "cracked tile")  # duplicates kept once
    assert "a photo of a cracked tile." in prompts.abnormal_sentences
    assert PromptSet.from_json(prompts.to_json()) == prompts


def test_decoder_map_is_the_formula_on_each_level(backbone: Any) -> None:
    prompts = PromptSet.for_product("part")
    decoder = build_decoder(backbone, prompts)
    images = torch.rand(2, 3, 64, 64)
    levels = backbone(images)
    maps = decoder(levels)
    text = text_features(backbone, prompts)
    for level, m in zip(levels, maps, strict=True):
        tokens = level.flatten(2).transpose(1, 2)
        expected = anomaly_probability(backbone.project_tokens(tokens), text).view(2, 1, 8, 8)
        torch.testing.assert_close(m, expected)


def test_mode_both_adds_the_two_maps(backbone: Any) -> None:
    insp = Inspector(backbone, device="cpu", sigma=0.0)
    decoder = build_decoder(backbone, PromptSet.for_product("part"))
    refs = [make_part(seed, size=(64, 64)) for seed in range(2)]
    both = build_station_model(insp, "s", refs, 64, 0.0, decoder=decoder)
    few = build_station_model(insp, "s", refs, 64, 0.0)
    assert (both.mode, few.mode) == ("both", "few-shot")
    x = insp.to_tensor([make_part(9, size=(64, 64))], (64, 64))
    zero_shot = fuse_levels(decoder(backbone(x)), insp.map_shape((64, 64)))
    torch.testing.assert_close(insp.raw_maps(x, both), insp.raw_maps(x, few) + zero_shot)
    # calibration ran on the added map, so the threshold moved up by about the zero-shot level
    assert both.calibration.threshold > few.calibration.threshold


def test_zero_shot_with_references_calibrates_on_their_scores(backbone: Any) -> None:
    insp = Inspector(backbone, device="cpu")
    decoder = build_decoder(backbone, PromptSet.for_product("part"))
    refs = [make_part(seed, size=(64, 64)) for seed in range(3)]
    model = build_station_model(insp, "s", refs, 64, 0.0, decoder=decoder, bank=False)
    assert model.mode == "zero-shot" and model.bank is None
    scores = [float(insp.raw_maps(insp.to_tensor([r], (64, 64)), model).max()) for r in refs]
    assert model.calibration.normal_scores == pytest.approx(scores, rel=1e-5)
    assert model.calibration.threshold > max(scores)
    insp.add_station(model)
    results = insp.inspect([("s", r) for r in refs])
    assert not any(r.flagged for r in results)  # references lie below their own threshold
    assert all(0.0 <= r.score < 0.5 for r in results)
