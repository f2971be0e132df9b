"""End to end through the real packaged backbone: synthetic parts, few references, defects found."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.workers.conftest import make_part
from workers.backbones import load_backbone
from workers.evaluation.synthetic import make_part as synthetic_part
from workers.inspector import Inspector, inspection_shape
from workers.references import build_station_model
from workers.regions import position_word


@pytest.fixture(scope="module")
def inspector():
    insp = Inspector(load_backbone("packaged:efficientnet-lite0"), device="cpu")
    refs = [make_part(seed) for seed in range(4)]
    insp.add_station(build_station_model(insp, "line-a", refs, image_size=128, min_area=0.002))
    return insp


def test_defects_are_flagged_and_located_normals_pass(inspector):
    normals = [("line-a", make_part(100 + i)) for i in range(6)]
    hole_img, hole_mask = synthetic_part(200, defect="hole")
    scratch_img, _ = synthetic_part(201, defect="scratch")
    results = inspector.inspect([*normals, ("line-a", hole_img), ("line-a", scratch_img)])
    normal_scores = [r.score for r in results[:6]]
    hole, scratch = results[6], results[7]
    assert sum(r.flagged for r in results[:6]) <= 1, normal_scores
    assert hole.flagged and scratch.flagged
    assert min(hole.score, scratch.score) > max(normal_scores)
    ys, xs = np.nonzero(hole_mask)
    cy, cx = ys.mean(), xs.mean()
    assert hole.regions[0].position == position_word((cx + 0.5) / 128, (cy + 0.5) / 96)
    assert scratch.regions[0].position in {"top left", "left", "top"}
    # boxes are in original-frame pixels and contain the defect centre
    r = hole.regions[0]
    assert r.x <= cx <= r.x + r.w and r.y <= cy <= r.y + r.h


def test_a_score_just_below_the_threshold_is_neither_flagged_nor_half(inspector):
    """Raw scores are float32 and the threshold a float64: compared in float32, a score a hair
    below the threshold was flagged while its normalised score said 0.4999999 and no region."""
    model = inspector.stations["line-a"]
    hole, _ = synthetic_part(200, defect="hole")
    (first,) = inspector.inspect([("line-a", hole)])
    calibration = replace(model.calibration, threshold=first.raw_score + 1e-9)  # float32-equal
    probe = Inspector(inspector.backbone, device="cpu")
    probe.add_station(replace(model, calibration=calibration))
    (res,) = probe.inspect([("line-a", hole)])
    assert res.raw_score < calibration.threshold
    assert not res.flagged and res.score < 0.5 and not res.regions


def test_results_keep_input_order_across_stations_and_sizes(inspector):
    model = inspector.stations["line-a"]
    inspector.add_station(replace(model, station_id="line-b"))
    items = [
        ("line-b", make_part(300, defect="hole")),
        ("line-a", make_part(301, size=(64, 200))),
        ("line-a", make_part(302, defect="hole")),
    ]
    results = inspector.inspect(items)
    assert [r.station_id for r in results] == ["line-b", "line-a", "line-a"]
    assert results[0].flagged and results[2].flagged
    assert results[0].score == pytest.approx(results[2].score, abs=0.15)
    assert results[1].heatmap.dtype == np.uint8 and max(results[1].heatmap.shape) == 64
    assert set(results[0].timings) == {"preprocess_ms", "model_ms", "regions_ms"}


def test_inspection_shape_keeps_aspect_on_the_backbone_stride(inspector):
    assert inspection_shape((300, 600), 320, inspector.backbone) == (160, 320)
    assert inspection_shape((103, 400), 320, inspector.backbone) == (96, 320)


def test_bad_frames_and_unknown_stations_are_refused(inspector):
    with pytest.raises(KeyError, match="no-such"):
        inspector.inspect([("no-such", make_part(1))])
    with pytest.raises(ValueError, match="uint8"):
        inspector.inspect([("line-a", np.zeros((10, 10, 3), np.float32))])


def test_maps_on_the_coarse_grid_match_full_resolution_maps(inspector):
    """Fusing and smoothing on the stride-4 grid changes the map by interpolation error only."""
    model = inspector.stations["line-a"]
    fine = Inspector(inspector.backbone, device="cpu", map_stride=1)
    hole, _ = synthetic_part(210, defect="hole")
    x = inspector.to_tensor([make_part(120), hole], (96, 128))
    coarse_maps = inspector.raw_maps(x, model)
    assert coarse_maps.shape[-2:] == (24, 32)
    full = inspector.full_maps(x, model)
    exact = fine.raw_maps(x, model)
    assert full.shape == exact.shape == (2, 1, 96, 128)
    spread = float(exact.max() - exact.min())
    assert float((full - exact).abs().max()) < 0.05 * spread
    # image scores (map maxima) agree to within 2 % of the map's range
    assert coarse_maps.flatten(1).amax(1).tolist() == pytest.approx(
        exact.flatten(1).amax(1).tolist(), abs=0.02 * spread
    )


def _jpeg(frame: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def _decoded(jpeg: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def _device_path_matches_host_path(inspector: Inspector, device: str) -> None:
    model = inspector.stations["line-a"]
    # a backbone of its own: an Inspector moves its backbone to its device and dtype in place, so
    # sharing the module fixture's would leave the host inspector with a GPU fp16 backbone
    on_device = Inspector(load_backbone("packaged:efficientnet-lite0"), device=device)
    on_device.add_station(model)
    hole, _ = synthetic_part(220, defect="hole")
    frames = [make_part(130), hole, make_part(131, size=(64, 200))]  # two shapes in one call
    jpegs = [_jpeg(f) for f in frames]
    host = inspector.inspect([("line-a", _decoded(j)) for j in jpegs])
    dev = on_device.inspect_jpegs([("line-a", j) for j in jpegs])
    assert all(r is not None for r in dev)
    for h, d in zip(host, dev, strict=True):
        assert d is not None
        assert d.score == pytest.approx(h.score, abs=0.05)  # libjpeg vs libjpeg-turbo, resize kernels
        assert d.flagged == h.flagged
        assert np.abs(d.heatmap.astype(int) - h.heatmap.astype(int)).mean() < 12  # of 255
    assert dev[1] is not None and dev[1].regions and host[1].regions
    assert dev[1].regions[0].position == host[1].regions[0].position


def test_jpegs_decoded_on_the_device_inspect_like_host_decoded_frames(inspector):
    _device_path_matches_host_path(inspector, "cpu")


def test_undecodable_jpegs_give_none_and_the_rest_are_inspected(inspector):
    good = _jpeg(make_part(140))
    results = inspector.inspect_jpegs([("line-a", good), ("line-a", b"\xff\xd8garbage"), ("line-a", b"")])
    assert results[0] is not None and results[1] is None and results[2] is None


@pytest.mark.gpu
def test_gpu_decode_and_preprocessing_match_the_cpu_path(inspector):
    """nvJPEG decode, resize and fp16 maps on the GPU against the CPU path (issue 8's tolerance)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _device_path_matches_host_path(inspector, "cuda")


@pytest.mark.gpu
def test_a_station_bank_builds_on_the_gpu():
    """The coreset runs on the GPU; indexing the CPU owner labels with its GPU indices raised
    "indices should be either on cpu or on the same device as the indexed tensor"."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = Inspector(load_backbone("packaged:efficientnet-lite0"), device="cuda")
    refs = [make_part(seed) for seed in range(4)]
    gpu.add_station(build_station_model(gpu, "line-g", refs, image_size=128, min_area=0.002))
    hole, _ = synthetic_part(220, defect="hole")
    normal, bad = gpu.inspect([("line-g", make_part(120)), ("line-g", hole)])
    assert bad.flagged and not normal.flagged


def test_bf16_bank_search_scores_like_the_fp32_search(inspector):
    # the same station searched in bf16 (CPUs with native bf16, workers/memory_bank.py) and in
    # fp32: raw scores agree to well under the gap between a normal part and a defect
    exact = Inspector(inspector.backbone, device="cpu")
    exact.search_dtype = torch.float32
    fast = Inspector(inspector.backbone, device="cpu")
    fast.search_dtype = torch.bfloat16
    model = inspector.stations["line-a"]
    for insp in (exact, fast):
        insp.add_station(replace(model, bank=model.bank.to("cpu", torch.float32)))
    assert fast.stations["line-a"].bank.levels[0].dtype == torch.bfloat16
    assert exact.stations["line-a"].bank.levels[0].dtype == torch.float32
    items = [("line-a", make_part(400 + i)) for i in range(3)] + [("line-a", make_part(410, defect="hole"))]
    a, b = exact.inspect(items), fast.inspect(items)
    for x, y in zip(a, b, strict=True):
        assert y.raw_score == pytest.approx(x.raw_score, abs=0.003)
        assert x.flagged == y.flagged
    assert b[3].flagged and not any(r.flagged for r in b[:3])
