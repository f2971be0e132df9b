"""The map and score formulas against small hand-computed tensors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workers.calibration import Calibration, calibrate, suspect_references, typical_top
from workers.localization import fuse_levels, gaussian_blur, image_scores, self_similarity
from workers.memory_bank import MemoryBank, greedy_coreset, nearest_distances, search_dtype


def test_nearest_distances_match_brute_force_across_blocks(monkeypatch):
    # tiny blocks force the chunked path through several query and bank blocks
    monkeypatch.setattr("workers.memory_bank.SEARCH_BLOCK_ELEMENTS", 64)
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(37, 5, generator=gen), dim=1)
    bank = F.normalize(torch.randn(53, 5, generator=gen), dim=1)
    expected = 1.0 - (q @ bank.T).max(dim=1).values
    torch.testing.assert_close(nearest_distances(q, bank), expected)


def test_bf16_search_keeps_small_distances_precise():
    # near neighbours (distances ~0.02-0.2) as normal patches have them: a bf16 product of the
    # cosines themselves would round them to steps of 0.004; the shifted product keeps ~0.001
    gen = torch.Generator().manual_seed(1)
    bank = F.normalize(torch.randn(256, 40, generator=gen), dim=1)
    q = F.normalize(bank[:200] + 0.1 * torch.randn(200, 40, generator=gen), dim=1)
    exact = nearest_distances(q, bank)
    fast = nearest_distances(q, bank.bfloat16())
    assert fast.dtype == torch.float32
    assert (fast - exact).abs().max().item() < 0.002
    naive = 1.0 - (q.bfloat16() @ bank.bfloat16().T).amax(dim=1).float()
    assert (naive - exact).abs().mean().item() > 1.5 * (fast - exact).abs().mean().item()


def test_bf16_search_finds_exact_matches_and_the_nearest_of_several_blocks(monkeypatch):
    # an exact match (distance 0, a product that rounds to about -2^-6) must win over every
    # other bank row; the int16 reading of bf16 maxima must pick it across bank blocks too
    monkeypatch.setattr("workers.memory_bank.SEARCH_BLOCK_ELEMENTS", 64)
    gen = torch.Generator().manual_seed(2)
    bank = F.normalize(torch.randn(40, 8, generator=gen), dim=1)
    q = torch.cat([bank[[3, 17, 39]], F.normalize(torch.randn(5, 8, generator=gen), dim=1)])
    exact = nearest_distances(q, bank)
    fast = nearest_distances(q, bank.bfloat16())
    assert fast[:3].abs().max().item() < 0.004
    torch.testing.assert_close(fast, exact, atol=0.006, rtol=0)


def test_search_dtype_is_bf16_only_for_fp32_on_cpus_with_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr("workers.memory_bank._native_bf16", lambda: True)
    assert search_dtype(cpu, torch.float32) == torch.bfloat16
    assert search_dtype(torch.device("cuda"), torch.float16) == torch.float16
    monkeypatch.setattr("workers.memory_bank._native_bf16", lambda: False)
    assert search_dtype(cpu, torch.float32) == torch.float32


def test_distance_map_is_one_minus_best_cosine_per_patch():
    bank = MemoryBank.from_patches([torch.tensor([[1.0, 0.0], [0.0, 1.0]])])
    # 1x1x2x2 feature map: patches (1,0), (0,1), (1,1)/√2, (-1,0)
    feats = torch.tensor([[1.0, 0.0, 0.7071068, -1.0], [0.0, 1.0, 0.7071068, 0.0]]).view(1, 2, 2, 2)
    (m,) = bank.distance_maps([feats])
    expected = torch.tensor([[0.0, 0.0], [1 - 0.7071068, 1.0]]).view(1, 1, 2, 2)
    torch.testing.assert_close(m, expected, atol=1e-6, rtol=0)


def test_fuse_levels_averages_upsampled_levels():
    coarse = torch.full((1, 1, 1, 1), 0.8)
    fine = torch.tensor([[0.0, 0.2], [0.4, 0.6]]).view(1, 1, 2, 2)
    fused = fuse_levels([coarse, fine], (2, 2))
    torch.testing.assert_close(fused, (fine + 0.8) / 2)


def test_gaussian_blur_keeps_constants_and_mass_and_spreads_a_peak():
    const = torch.full((1, 1, 20, 30), 0.3)
    torch.testing.assert_close(gaussian_blur(const, 2.0), const)
    peak = torch.zeros(1, 1, 41, 41)
    peak[0, 0, 20, 20] = 1.0
    out = gaussian_blur(peak, 2.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert out[0, 0, 20, 20] < 0.1 and out[0, 0, 20, 22] > 0.01
    assert out.argmax().item() == 20 * 41 + 20


def test_image_score_is_map_maximum():
    maps = torch.tensor([[0.1, 0.5], [0.2, 0.3], [0.9, 0.0]]).view(3, 1, 1, 2)
    torch.testing.assert_close(image_scores(maps), torch.tensor([0.5, 0.3, 0.9]))


def test_greedy_coreset_picks_the_far_outliers_first():
    cluster = torch.randn(200, 4) * 0.01
    outliers = torch.tensor([[10.0, 0, 0, 0], [0, -10.0, 0, 0], [0, 0, 10.0, 0]])
    x = torch.cat([cluster, outliers])
    picks = set(greedy_coreset(x, 4, projection_dim=128).tolist())
    assert {200, 201, 202} <= picks
    assert greedy_coreset(x, 500).numel() == 203  # no subsampling when asked for more


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(0.40, 0.5), (0.30, 0.0), (0.35, 0.25), (0.50, 1.0), (0.10, 0.0), (0.45, 0.75)],
)
def test_normalize_maps_threshold_to_half(raw, expected):
    cal = Calibration(threshold=0.40, normal_level=0.30, normal_scores=(0.38, 0.40))
    assert float(cal.normalize(raw)) == pytest.approx(expected)


def test_calibrate_takes_highest_leave_one_out_score():
    cal = calibrate(np.array([0.31, 0.42]), loo_pixel_median=0.2, margin=0.0)
    assert cal.threshold == pytest.approx(0.42)
    assert cal.normal_scores == (0.31, 0.42)
    wider = calibrate(np.array([0.31, 0.42]), loo_pixel_median=0.2, margin=0.5)
    assert wider.threshold == pytest.approx(0.42 + 0.5 * 0.22)
    # three or more: the second highest stands for the references; the highest, within the
    # margin, is not suspect
    three = calibrate(np.array([0.31, 0.42, 0.37]), loo_pixel_median=0.2, margin=0.5)
    assert three.threshold == pytest.approx(0.37 + 0.5 * 0.17)
    assert suspect_references(three) == []
    with pytest.raises(ValueError, match="must exceed"):
        Calibration(threshold=0.2, normal_level=0.2, normal_scores=())


def test_calibrate_places_the_threshold_between_normal_and_synthetic_defect_scores():
    loo = np.array([0.2, 0.3])
    cal = calibrate(loo, loo_pixel_median=0.1, anomaly_scores=np.array([0.9, 0.5, 0.7]), between=0.5)
    assert cal.threshold == pytest.approx(0.3 + 0.5 * (0.7 - 0.3))  # halfway to the median defect
    assert calibrate(loo, 0.1, anomaly_scores=np.array([0.9, 0.5, 0.7]), between=0.25).threshold == (
        pytest.approx(0.3 + 0.25 * 0.4)
    )
    # drawn defects that score no higher than the references: no gap, the margin rule decides
    no_gap = calibrate(loo, 0.1, margin=1.0, anomaly_scores=np.array([0.25, 0.3, 0.28]))
    assert no_gap.threshold == pytest.approx(0.3 + 1.0 * 0.2)
    assert calibrate(loo, 0.1, margin=1.0, anomaly_scores=np.array([])).threshold == pytest.approx(0.5)


def test_one_odd_reference_does_not_lift_the_threshold_above_every_defect():
    # reference 3 (another lighting) scores 0.40 against the others; the median drawn defect 0.39
    loo = np.array([0.27, 0.27, 0.29, 0.40])
    defects = np.array([0.27, 0.33, 0.35, 0.37, 0.37, 0.39, 0.39, 0.39, 0.40, 0.40, 0.41, 0.45])
    cal = calibrate(loo, 0.18, margin=1.0, anomaly_scores=defects)
    assert cal.threshold == pytest.approx(0.29 + 0.5 * (0.39 - 0.29))  # not 0.40 + 0.22
    assert suspect_references(cal) == [3]
    assert typical_top(np.array([0.2, 0.9])) == 0.9  # two scores: nothing to set aside
    assert typical_top(np.array([0.5])) == 0.5


def test_self_similarity_ignores_the_window_and_finds_twins_elsewhere():
    # a 1x8 strip: patches 0 and 6 are twins, patch 3 is unique
    vecs = torch.tensor([[1.0, 0], [0, 1.0], [0, 1.0], [-1.0, 0], [0, 1.0], [0, 1.0], [1.0, 0], [0, 1.0]])
    feats = F.normalize(vecs, dim=1).T.reshape(1, 2, 1, 8)
    sims = self_similarity(feats, radius=0.25)[0, 0, 0]  # window: 2 patches either side
    assert sims[0] == pytest.approx(1.0)  # its twin at 6 is outside the window
    assert sims[3] == pytest.approx(0.0)  # only orthogonal patches lie outside its window
    assert sims[1] == pytest.approx(1.0)  # twins at 4, 5 and 7
